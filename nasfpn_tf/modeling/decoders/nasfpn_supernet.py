"""A weight-sharing supernet over the NAS-FPN search space (one-shot search).

Every architecture of the search space (`nasfpn_tf.search.search_space`) is a
path through this layer. The weights a cell can use are shared per
(repeat, cell index, output level): cell k of repeat r that outputs level l
always uses the conv + batch norm of slot `r{r}_c{k}_P{l}`, whatever its
inputs and op. That is exactly the weight layout of a stand-alone `NasFpn`,
whose cell k owns one conv + BN (its resamplers carry no weights, because every
pool entry already has `filters` channels), so `inherit_weights` copies a
path's slots into a `NasFpn` of that spec and the two compute the same function.
The input resamplers (backbone projections, P6/P7) do not depend on the
architecture and are shared by all paths.

Why per output level and not per cell index alone: batch-norm statistics and
the 3x3 kernel see a different scale of features at each level; sharing one
slot across levels made every path's statistics a mix of five scales. Sharing
does not depend on the op or the inputs, so a slot is trained by about
1 / num_levels of the steps (uniform single-path sampling).

The path is plain Python state (`architecture`), so the layer runs eagerly when
the path changes between calls; `SupernetModel` keeps the backbone and the head
compiled around it.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import keras
from keras import ops

from nasfpn_tf.architecture_spec import ArchitectureSpec, cell_input_plan, parse_spec
from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm
from nasfpn_tf.modeling.layers.merge_ops import POOL_TYPES
from nasfpn_tf.modeling.layers.merging_cell import combine_inputs
from nasfpn_tf.modeling.layers.resample import (Resample, initializer_config, make_initializer,
                                                resample_to_level, resampled_size)


def slot_name(repeat: int, cell: int, level: int) -> str:
  """Key of the weights cell `cell` of repeat `repeat` uses when it outputs `level`."""
  return f"r{repeat}_c{cell}_P{level}"


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class NasFpnSupernet(keras.layers.Layer):
  """All NAS-FPN pyramids of `num_cells` cells over one set of shared weights.

  Args:
    num_cells: merging cells per repeat (7 in the paper).
    filters: pyramid width.
    num_repeats: stacked copies of the (same) path.
    min_level, max_level: pyramid levels.
    architecture: the path used by `call` (anything `parse_spec` accepts, or None:
      then it must be set with `set_architecture` before calling).
    global_pool_type, norm_momentum, norm_epsilon, use_sync_bn, kernel_initializer:
      as in `NasFpn`.

  Call arguments:
    features: backbone features {"P3": ..., "P5": ...}, as `NasFpn` takes them.
    training: batch-norm mode.

  Returns:
    {"P3": ..., "P7": ...}, each [B, H_l, W_l, filters], computed with the path
    `self.architecture`.

  Example:
    supernet = NasFpnSupernet(num_cells=7, filters=64, num_repeats=1)
    supernet.set_architecture("nasfpn")
    pyramid = supernet({"P3": c3, "P4": c4, "P5": c5})
  """

  def __init__(self, num_cells: int = 7, filters: int = 256, num_repeats: int = 1,
               min_level: int = 3, max_level: int = 7, architecture: Any = None,
               global_pool_type: str = "max", norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
               kernel_initializer: Any = None, **kwargs):
    super().__init__(**kwargs)
    num_levels = max_level - min_level + 1
    if num_cells < num_levels:
      raise ValueError(f"num_cells {num_cells} cannot output {num_levels} levels")
    if num_repeats < 1 or filters < 1:
      raise ValueError(f"num_repeats {num_repeats} and filters {filters} must be >= 1")
    if global_pool_type not in POOL_TYPES:
      raise ValueError(f"global_pool_type '{global_pool_type}' is not one of {list(POOL_TYPES)}")
    self.num_cells, self.filters, self.num_repeats = num_cells, filters, num_repeats
    self.min_level, self.max_level = min_level, max_level
    self.global_pool_type = global_pool_type
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn
    self.kernel_initializer = initializer_config(kernel_initializer)
    self.architecture: Optional[ArchitectureSpec] = None
    if architecture is not None:
      self.set_architecture(architecture)

  @property
  def levels(self) -> list[int]:
    return list(range(self.min_level, self.max_level + 1))

  def set_architecture(self, spec: Any) -> ArchitectureSpec:
    """Selects the path `call` computes; returns it as an `ArchitectureSpec`."""
    spec = parse_spec(spec, self.min_level, self.max_level)
    if len(spec.cells) != self.num_cells:
      raise ValueError(f"architecture has {len(spec.cells)} cells, the supernet {self.num_cells}")
    self.architecture = spec
    self._plan = cell_input_plan(spec)
    return spec

  def build(self, input_shape: Mapping):
    norm = {"norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn, "kernel_initializer": self.kernel_initializer,
            "dtype": self.dtype_policy}
    self.input_resamplers = {}
    shapes = {}
    for level in self.levels:
      key = f"P{level}"
      source, shape = (level, tuple(input_shape[key])) if key in input_shape else (
          level - 1, shapes[level - 1])
      layer = Resample(source, level, self.filters, name=f"input_{key}", **norm)
      layer.build(shape)
      self.input_resamplers[key] = layer
      shapes[level] = layer.compute_output_shape(shape)
    self.slot_convs, self.slot_norms = {}, {}
    feature_shape = (None, None, None, self.filters)
    for r in range(self.num_repeats):
      for k in range(self.num_cells):
        for level in self.levels:
          name = slot_name(r, k, level)
          conv = keras.layers.Conv2D(
              self.filters, 3, padding="same", name=f"{name}_conv", dtype=self.dtype_policy,
              kernel_initializer=make_initializer(self.kernel_initializer))
          conv.build(feature_shape)
          bn = FusedBatchNorm(momentum=self.norm_momentum, epsilon=self.norm_epsilon,
                              synchronized=self.use_sync_bn, name=f"{name}_bn",
                              dtype=self.dtype_policy)
          bn.build(feature_shape)
          self.slot_convs[name], self.slot_norms[name] = conv, bn

  def input_features(self, features: Mapping, training=None) -> list:
    """The pyramid's inputs P{min}..P{max} at `filters` channels (path-independent)."""
    feats, previous = [], None
    for level in self.levels:
      key = f"P{level}"
      x = features[key] if key in features else previous
      previous = self.input_resamplers[key](x, training=training)
      feats.append(previous)
    return feats

  def path_norms(self, spec: Optional[ArchitectureSpec] = None) -> list[FusedBatchNorm]:
    """The batch-norm layers the path uses (for recalibrating their statistics)."""
    spec = spec or self.architecture
    return [self.slot_norms[slot_name(r, k, c.level)]
            for r in range(self.num_repeats) for k, c in enumerate(spec.cells)]

  def run_cells(self, feats: list, training=None) -> dict:
    """The path's merging cells on `input_features` output; {"P3": ...}."""
    spec = self.architecture
    if spec is None:
      raise ValueError("NasFpnSupernet: no architecture selected; call set_architecture first")
    pool_levels = spec.pool_levels()
    outputs = spec.output_cells()
    for r in range(self.num_repeats):
      pool = list(feats)
      for k, (cell, indices) in enumerate(zip(spec.cells, self._plan)):
        inputs = [resample_to_level(pool[i], pool_levels[i], cell.level) for i in indices]
        x = combine_inputs(inputs, [pool_levels[i] for i in indices], cell.op,
                           self.global_pool_type)
        name = slot_name(r, k, cell.level)
        pool.append(self.slot_norms[name](self.slot_convs[name](ops.relu(x)), training=training))
      feats = [pool[spec.num_inputs + outputs[level]] for level in self.levels]
    return {f"P{level}": f for level, f in zip(self.levels, feats)}

  def call(self, features: Mapping, training=None):
    return self.run_cells(self.input_features(features, training), training)

  def compute_output_shape(self, input_shape: Mapping):
    b, h, w, _ = input_shape[f"P{self.min_level}"]
    return {f"P{l}": (b, resampled_size(h, self.min_level, l),
                      resampled_size(w, self.min_level, l), self.filters) for l in self.levels}

  def inherit_weights(self, decoder: keras.layers.Layer, spec: Any = None) -> None:
    """Copies the weights path `spec` (default: the selected one) uses into a built `NasFpn`.

    The `NasFpn` must have this spec, width and number of repeats; afterwards it computes
    what this supernet computes with that path.
    """
    spec = parse_spec(spec, self.min_level, self.max_level) if spec is not None else self.architecture
    if decoder.spec != spec or decoder.filters != self.filters or \
        decoder.num_repeats != self.num_repeats:
      raise ValueError("inherit_weights: the NasFpn must have the path's spec, "
                       f"filters={self.filters} and num_repeats={self.num_repeats}")
    for level in self.levels:
      decoder.input_resamplers[level].set_weights(
          self.input_resamplers[f"P{level}"].get_weights())
    for r, repeat in enumerate(decoder.cells):
      for k, (cell_layer, _) in enumerate(repeat):
        name = slot_name(r, k, spec.cells[k].level)
        cell_layer.conv.set_weights(self.slot_convs[name].get_weights())
        cell_layer.norm.set_weights(self.slot_norms[name].get_weights())

  def get_config(self) -> dict:
    arch = self.architecture
    return {**super().get_config(), "num_cells": self.num_cells, "filters": self.filters,
            "num_repeats": self.num_repeats, "min_level": self.min_level,
            "max_level": self.max_level,
            "architecture": None if arch is None else {
                "cells": arch.to_records(), "min_level": arch.min_level,
                "max_level": arch.max_level},
            "global_pool_type": self.global_pool_type, "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn,
            "kernel_initializer": copy.deepcopy(self.kernel_initializer)}
