"""NAS-FPN decoder: any merging-cell architecture, stacked `num_repeats` times.

The architecture is data (`nasfpn_tf.architecture_spec`): the published cell,
FPN, PANet or a searched one all build here, and `get_config` stores the cells
themselves so a searched architecture reloads as itself (Model Garden's NASFPN
drops its block specs from its config; we must not).

Layout, as Model Garden builds it (which fixes the parameter count):
  * backbone levels min_level..k get a 1x1 conv (with bias) + BN where their width
    is not `filters`; levels k+1..max_level are made from the level below by the
    same resampling (1x1 conv + BN only if widths differ, then max-pool by 2);
  * each repeat runs every cell of the spec (ReLU -> 3x3 conv with bias -> BN);
    its output cells are the next repeat's inputs; no weights are shared.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import keras

from nasfpn_tf.architecture_spec import ArchitectureSpec, cell_input_plan, parse_spec
from nasfpn_tf.levels import level_key
from nasfpn_tf.modeling.layers.merge_ops import POOL_TYPES
from nasfpn_tf.modeling.layers.merging_cell import MergingCell
from nasfpn_tf.modeling.layers.resample import Resample, initializer_config, resampled_size

__all__ = ["NasFpn", "cell_input_plan"]  # cell_input_plan re-exported for existing imports


def build_input_resamplers(levels: list[int], input_shape: Mapping, filters: int,
                           common_args: dict) -> tuple[dict, dict]:
  """The pyramid's input layers and their output shapes, both keyed "P3".. in level order.

  A backbone level gets a 1x1 conv + BN where its width is not `filters`; a level above the
  backbone is made from the level below (Model Garden's P6 / P7). Shared by `NasFpn` and
  the one-shot supernet, whose inputs do not depend on the architecture.
  """
  resamplers, shapes = {}, {}
  for level in levels:
    key = level_key(level)
    if key in input_shape:
      source, shape = level, tuple(input_shape[key])
    else:
      source, shape = level - 1, shapes[level_key(level - 1)]
    layer = Resample(source, level, filters, name=f"input_{key}", **common_args)
    layer.build(shape)
    resamplers[key] = layer
    shapes[key] = layer.compute_output_shape(shape)
  return resamplers, shapes


def pyramid_inputs(resamplers: Mapping, features: Mapping, training=None) -> list:
  """Runs `build_input_resamplers`' layers: P{min}..P{max} at the pyramid's width."""
  feats, previous = [], None
  for key, layer in resamplers.items():
    previous = layer(features[key] if key in features else previous, training=training)
    feats.append(previous)
  return feats


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class NasFpn(keras.layers.Layer):
  """Feature pyramid built from merging cells.

  Args:
    spec: anything `parse_spec` accepts (a name like "nasfpn", a compact string, a
      YAML/JSON file or text, cell records, a `{"cells": ...}` mapping, an
      `ArchitectureSpec`). Its levels must be `min_level..max_level`.
    filters: pyramid width (256 in the paper; 384 for the large model).
    num_repeats: stacked copies of the spec (7 in the paper, 5 in Model Garden).
    min_level, max_level: pyramid levels.
    global_pool_type: "max" (TF reference) or "avg" (mmdetection) for global-pool cells.
    use_dropblock, dropblock_size, dropblock_keep_prob: DropBlock after each cell's BN.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    kernel_initializer: for every conv; None is Model Garden's
      VarianceScaling(2.0, "fan_out", "untruncated_normal").
    use_separable_conv: depthwise-separable 3x3 convs in the merging cells (the paper's
      NAS-FPNLite, Model Garden's `use_separable_conv`); the spec is unchanged.

  Call arguments:
    features: backbone features {"P3": ..., "P5": ...} from `min_level` up to some
      level <= max_level (keys above max_level are ignored). The P{min_level} height
      and width must be divisible by 2**(max_level - min_level) so that upsampled
      coarse levels line up with fine ones (input images a multiple of 2**max_level).
    training: batch-norm / DropBlock mode.

  Returns:
    {"P3": ..., "P7": ...}, each [B, H_l, W_l, filters].

  Example:
    decoder = NasFpn("nasfpn", filters=256, num_repeats=7)
    pyramid = decoder({"P3": c3, "P4": c4, "P5": c5})
  """

  def __init__(self, spec: Any = "nasfpn", filters: int = 256, num_repeats: int = 7,
               min_level: int = 3, max_level: int = 7, global_pool_type: str = "max",
               use_dropblock: bool = False, dropblock_size: int = 3,
               dropblock_keep_prob: float = 0.9, norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
               kernel_initializer: Any = None, use_separable_conv: bool = False, **kwargs):
    super().__init__(**kwargs)
    if num_repeats < 1:
      raise ValueError(f"num_repeats {num_repeats} must be >= 1")
    if filters < 1:
      raise ValueError(f"filters {filters} must be >= 1")
    if global_pool_type not in POOL_TYPES:
      raise ValueError(f"global_pool_type '{global_pool_type}' is not one of {list(POOL_TYPES)}")
    if not 0 < dropblock_keep_prob <= 1:
      raise ValueError(f"dropblock_keep_prob {dropblock_keep_prob} must be in (0, 1]")
    if dropblock_size < 1:
      raise ValueError(f"dropblock_size {dropblock_size} must be >= 1")
    self.spec: ArchitectureSpec = parse_spec(spec, min_level, max_level)
    if (self.spec.min_level, self.spec.max_level) != (min_level, max_level):
      raise ValueError(f"spec covers levels P{self.spec.min_level}..P{self.spec.max_level} "
                       f"but the decoder has min_level={min_level}, max_level={max_level}")
    self.filters, self.num_repeats = filters, num_repeats
    self.min_level, self.max_level = min_level, max_level
    self.global_pool_type = global_pool_type
    self.use_dropblock = use_dropblock
    self.dropblock_size, self.dropblock_keep_prob = dropblock_size, dropblock_keep_prob
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn
    self.kernel_initializer = initializer_config(kernel_initializer)
    self.use_separable_conv = bool(use_separable_conv)

  @property
  def levels(self) -> list[int]:
    return list(range(self.min_level, self.max_level + 1))

  def _common_args(self) -> dict:
    return {"norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn, "kernel_initializer": self.kernel_initializer,
            "dtype": self.dtype_policy}

  def _check_inputs(self, input_shape: Mapping) -> None:
    if not isinstance(input_shape, Mapping):
      raise ValueError(f"NasFpn takes a dict of backbone features keyed 'P3'..; got "
                       f"{type(input_shape).__name__}")
    key = level_key(self.min_level)
    if key not in input_shape:
      raise ValueError(f"NasFpn needs backbone level {key}; got {sorted(input_shape)}")
    factor = 2 ** (self.max_level - self.min_level)
    for size in tuple(input_shape[key])[1:3]:
      if size is not None and size % factor:
        raise ValueError(
            f"NasFpn: {key} is {tuple(input_shape[key])[1:3]}, but its height and width must be "
            f"divisible by {factor} (= 2**(max_level - min_level)) so that P{self.max_level} "
            f"upsampled to {key} lines up; use input images a multiple of {2 ** self.max_level}")

  def build(self, input_shape: Mapping):
    self._check_inputs(input_shape)
    self.input_resamplers, shapes = build_input_resamplers(
        self.levels, input_shape, self.filters, self._common_args())
    plan = cell_input_plan(self.spec)
    pool_levels = self.spec.pool_levels()
    self.cells = []
    for r in range(self.num_repeats):
      repeat = []
      for k, (cell, indices) in enumerate(zip(self.spec.cells, plan)):
        layer = MergingCell(
            [pool_levels[i] for i in indices], cell.level, cell.op, self.filters,
            self.global_pool_type, self.use_dropblock, self.dropblock_keep_prob,
            self.dropblock_size, use_separable_conv=self.use_separable_conv,
            name=f"repeat{r}_cell{k}_P{cell.level}", **self._common_args())
        # Every pool entry has `filters` channels; entries of one level share a size.
        layer.build([shapes[level_key(pool_levels[i])] for i in indices])
        repeat.append((layer, indices))
      self.cells.append(repeat)

  def call(self, features: Mapping, training=None):
    feats = pyramid_inputs(self.input_resamplers, features, training)
    outputs = self.spec.output_cells()
    for repeat in self.cells:
      pool = list(feats)
      for layer, indices in repeat:
        pool.append(layer([pool[i] for i in indices], training=training))
      feats = [pool[self.spec.num_inputs + outputs[level]] for level in self.levels]
    return {level_key(level): f for level, f in zip(self.levels, feats)}

  def compute_output_shape(self, input_shape: Mapping):
    b, h, w, _ = input_shape[level_key(self.min_level)]
    return {level_key(l): (b, resampled_size(h, self.min_level, l),
                      resampled_size(w, self.min_level, l), self.filters) for l in self.levels}

  def get_config(self) -> dict:
    # The spec as plain records (never dropped): a searched architecture reloads as itself.
    return {**super().get_config(),
            "spec": {"cells": self.spec.to_records(), "min_level": self.spec.min_level,
                     "max_level": self.spec.max_level},
            "filters": self.filters, "num_repeats": self.num_repeats,
            "min_level": self.min_level, "max_level": self.max_level,
            "global_pool_type": self.global_pool_type, "use_dropblock": self.use_dropblock,
            "dropblock_size": self.dropblock_size, "dropblock_keep_prob": self.dropblock_keep_prob,
            "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn,
            "kernel_initializer": copy.deepcopy(self.kernel_initializer),
            "use_separable_conv": self.use_separable_conv}
