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

The selected path lives in small integer variables (each cell's output level,
inputs, op, which input gates a global-pooling merge, the output rule's extra
addends, which cell gives each output level), and `call` picks each cell's branch
with `tf.switch_case` on them. So one traced graph computes every path: a
training step can change the path by assigning the variables (no retrace), and
scoring 2,000 paths traces once. A first version ran the cells as eager Python
per path: its train step was 2.8-3x slower than the graph on this 2-core CPU.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nasfpn_tf.architecture_spec import OPS, ArchitectureSpec, cell_input_plan, parse_spec
from nasfpn_tf.levels import level_key
from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm
from nasfpn_tf.modeling.decoders.nasfpn import build_input_resamplers, pyramid_inputs
from nasfpn_tf.modeling.layers.merge_ops import POOL_TYPES, global_pool_merge
from nasfpn_tf.modeling.layers.resample import (initializer_config, make_initializer,
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
    self._arch_vars: Optional[dict] = None
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
    if self._arch_vars is not None:
      for name, value in self.path_arrays(spec).items():
        self._arch_vars[name].assign(value)
    return spec

  def path_arrays(self, spec: ArchitectureSpec) -> dict[str, np.ndarray]:
    """The path as the integer arrays `call` reads (see the module docstring)."""
    num_inputs, cells = spec.num_inputs, spec.cells
    pool_levels = spec.pool_levels()
    extras = np.zeros((self.num_cells, num_inputs + self.num_cells), np.int32)
    for k, indices in enumerate(cell_input_plan(spec)):
      extras[k, indices[2:]] = 1
    outputs = spec.output_cells()
    return {
        "level": np.array([c.level - self.min_level for c in cells], np.int32),
        "inputs": np.array([c.inputs for c in cells], np.int32),
        "op": np.array([OPS.index(c.op) for c in cells], np.int32),
        # merge_ops: the input from the coarser original level gates (ties: the first).
        "first_gates": np.array([pool_levels[c.inputs[0]] >= pool_levels[c.inputs[1]]
                                 for c in cells], np.int32),
        "extras": extras,
        "output_cell": np.array([outputs[l] for l in self.levels], np.int32)}

  def build(self, input_shape: Mapping):
    norm = {"norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn, "kernel_initializer": self.kernel_initializer,
            "dtype": self.dtype_policy}
    self.input_resamplers, _ = build_input_resamplers(self.levels, input_shape, self.filters,
                                                      norm)
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
    # Plain tf.Variables, not Keras weights: the path is in get_config, not in checkpoints.
    arrays = self.path_arrays(self.architecture or _first_path(self))
    self._arch_vars = {name: tf.Variable(value, trainable=False, name=f"path_{name}")
                       for name, value in arrays.items()}

  def input_features(self, features: Mapping, training=None) -> list:
    """The pyramid's inputs P{min}..P{max} at `filters` channels (path-independent)."""
    return pyramid_inputs(self.input_resamplers, features, training)

  def path_norms(self, spec: Optional[ArchitectureSpec] = None) -> list[FusedBatchNorm]:
    """The batch-norm layers the path uses (for recalibrating their statistics)."""
    spec = spec or self.architecture
    return [self.slot_norms[slot_name(r, k, c.level)]
            for r in range(self.num_repeats) for k, c in enumerate(spec.cells)]

  def run_cells(self, feats: list, training=None) -> dict:
    """The selected path's merging cells on `input_features` output; {"P3": ...}."""
    if self.architecture is None:
      raise ValueError("NasFpnSupernet: no architecture selected; call set_architecture first")
    path = {name: var.value() if hasattr(var, "value") else var
            for name, var in self._arch_vars.items()}
    num_levels = len(self.levels)
    first_output = self.num_cells - num_levels
    for r in range(self.num_repeats):
      # Pool entry j at every level: a cell's inputs are picked at its output level.
      pool = [[resample_to_level(f, self.min_level + i, l) for l in self.levels]
              for i, f in enumerate(feats)]
      for k in range(self.num_cells):
        branches = [functools.partial(self._cell_branch, r, k, t, pool, path,
                                      k >= first_output, training)
                    for t in range(num_levels)]
        pool.append(list(tf.switch_case(path["level"][k], branches)))
      feats = [tf.switch_case(path["output_cell"][i],
                              [functools.partial(lambda c, i: pool[num_levels + c][i], c, i)
                               for c in range(self.num_cells)])
               for i in range(num_levels)]
    return {level_key(level): f for level, f in zip(self.levels, feats)}

  def _cell_branch(self, repeat: int, k: int, t: int, pool: list, path: dict,
                   is_output: bool, training) -> list:
    """Cell k with output level min_level + t: merge, ReLU-conv-BN, then at every level."""
    num_inputs = len(self.levels) + k
    pick = lambda which: tf.switch_case(
        path["inputs"][k, which],
        [functools.partial(lambda j: pool[j][t], j) for j in range(num_inputs)])
    a, b = pick(0), pick(1)
    first_gates = ops.cast(path["first_gates"][k], "bool")
    gate, other = ops.where(first_gates, a, b), ops.where(first_gates, b, a)
    x = ops.where(ops.equal(path["op"][k], OPS.index("sum")), a + b,
                  global_pool_merge(gate, other, self.global_pool_type))
    if is_output:   # the output rule: unconsumed same-level entries are added
      for j in range(num_inputs):
        x = x + ops.cast(path["extras"][k, j], x.dtype) * pool[j][t]
    level = self.min_level + t
    name = slot_name(repeat, k, level)
    y = self.slot_norms[name](self.slot_convs[name](ops.relu(x)), training=training)
    return [resample_to_level(y, level, l) for l in self.levels]

  def call(self, features: Mapping, training=None):
    return self.run_cells(self.input_features(features, training), training)

  def compute_output_shape(self, input_shape: Mapping):
    b, h, w, _ = input_shape[level_key(self.min_level)]
    return {level_key(l): (b, resampled_size(h, self.min_level, l),
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
    for key, resampler in self.input_resamplers.items():
      decoder.input_resamplers[key].set_weights(resampler.get_weights())
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


def _first_path(supernet: NasFpnSupernet) -> ArchitectureSpec:
  """A valid placeholder path (a fixed uniform sample) until one is selected."""
  from nasfpn_tf.search.search_space import SearchSpace
  space = SearchSpace(supernet.num_cells, supernet.min_level, supernet.max_level)
  return space.actions_to_spec(space.sample_uniform(np.random.default_rng(0)))
