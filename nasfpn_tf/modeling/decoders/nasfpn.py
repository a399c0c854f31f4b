"""NAS-FPN decoder: any merging-cell architecture, stacked `num_repeats` times.

The architecture is data (`nasfpn_tf.architecture_spec`): the published cell,
FPN, PANet or a searched one all build here, and `get_config` stores the cells
themselves so a searched architecture reloads as itself.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras

from nasfpn_tf.architecture_spec import ArchitectureSpec, parse_spec
from nasfpn_tf.modeling.layers.merging_cell import MergingCell
from nasfpn_tf.modeling.layers.resample import Resample, resampled_size


def cell_input_plan(spec: ArchitectureSpec) -> list[list[int]]:
  """Pool indices each cell sums: its two inputs, plus — for output cells — every
  earlier pool entry of the same level that no cell has consumed so far (the
  paper's output rule; it keeps e.g. the P5 and P7 inputs of the published cell)."""
  levels = spec.pool_levels()
  consumed = [0] * len(levels)
  plan = []
  for k, cell in enumerate(spec.cells):
    indices = list(cell.inputs)
    for i in indices:
      consumed[i] += 1
    if cell.is_output:
      for j in range(spec.num_inputs + k):
        if consumed[j] == 0 and levels[j] == cell.level:
          indices.append(j)
          consumed[j] += 1
    plan.append(indices)
  return plan


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class NasFpn(keras.layers.Layer):
  """Feature pyramid built from merging cells.

  Backbone levels are brought to `filters` channels once (1x1 conv + BN where the
  width differs); levels above the backbone's are max-pooled from the level below.
  Then the spec runs `num_repeats` times, each repeat's outputs feeding the next;
  no weights are shared between repeats.

  Args:
    spec: anything `parse_spec` accepts (a name like "nasfpn", a compact string, a
      YAML file, cell records, an ArchitectureSpec).
    filters: pyramid width (256 in the paper; 384 for the large model).
    num_repeats: stacked copies of the spec (7 in the paper).
    min_level, max_level: pyramid levels.
    global_pool_type: "max" (TF reference) or "avg" (mmdetection) for global-pool cells.
    use_dropblock, dropblock_size, dropblock_keep_prob: DropBlock after each cell's BN.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.

  Call arguments:
    features: backbone features {"P3": ..., "P5": ...} from min_level up.

  Returns:
    {"P3": ..., "P7": ...}, each with `filters` channels.

  Example:
    decoder = NasFpn("nasfpn", filters=256, num_repeats=7)
  """

  def __init__(self, spec: Any = "nasfpn", filters: int = 256, num_repeats: int = 7,
               min_level: int = 3, max_level: int = 7, global_pool_type: str = "max",
               use_dropblock: bool = False, dropblock_size: int = 3,
               dropblock_keep_prob: float = 0.9, norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3, use_sync_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    if num_repeats < 1:
      raise ValueError(f"num_repeats {num_repeats} must be >= 1")
    self.spec = parse_spec(spec, min_level, max_level)
    self.filters, self.num_repeats = filters, num_repeats
    self.min_level, self.max_level = min_level, max_level
    self.global_pool_type = global_pool_type
    self.use_dropblock = use_dropblock
    self.dropblock_size, self.dropblock_keep_prob = dropblock_size, dropblock_keep_prob
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn

  @property
  def levels(self) -> list[int]:
    return list(range(self.min_level, self.max_level + 1))

  def _norm_args(self) -> dict:
    return {"norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn, "dtype": self.dtype_policy}

  def build(self, input_shape: Mapping):
    if f"P{self.min_level}" not in input_shape:
      raise ValueError(f"NasFpn needs backbone level P{self.min_level}; got {sorted(input_shape)}")
    self.input_resamplers = {}
    shapes = {}
    for level in self.levels:
      key = f"P{level}"
      source, shape = (level, input_shape[key]) if key in input_shape else (level - 1,
                                                                              shapes[level - 1])
      layer = Resample(source, level, self.filters, name=f"input_{key}", **self._norm_args())
      layer.build(tuple(shape))
      self.input_resamplers[level] = layer
      shapes[level] = layer.compute_output_shape(tuple(shape))
    plan = cell_input_plan(self.spec)
    pool_levels = self.spec.pool_levels()
    self.cells = []
    for r in range(self.num_repeats):
      repeat = []
      for k, (cell, indices) in enumerate(zip(self.spec.cells, plan)):
        layer = MergingCell(
            [pool_levels[i] for i in indices], cell.level, cell.op, self.filters,
            self.global_pool_type, self.use_dropblock, self.dropblock_keep_prob,
            self.dropblock_size, name=f"repeat{r}_cell{k}_P{cell.level}", **self._norm_args())
        layer.build([shapes[pool_levels[i]] for i in indices])
        repeat.append((layer, indices))
      self.cells.append(repeat)

  def call(self, features: Mapping, training=None):
    feats, previous = [], None
    for level in self.levels:
      key = f"P{level}"
      x = features[key] if key in features else previous
      previous = self.input_resamplers[level](x, training=training)
      feats.append(previous)
    outputs = self.spec.output_cells()
    for repeat in self.cells:
      pool = list(feats)
      for layer, indices in repeat:
        pool.append(layer([pool[i] for i in indices], training=training))
      feats = [pool[self.spec.num_inputs + outputs[level]] for level in self.levels]
    return {f"P{level}": f for level, f in zip(self.levels, feats)}

  def compute_output_shape(self, input_shape: Mapping):
    b, h, w, _ = input_shape[f"P{self.min_level}"]
    return {f"P{l}": (b, resampled_size(h, self.min_level, l), resampled_size(w, self.min_level, l),
                      self.filters) for l in self.levels}

  def get_config(self) -> dict:
    return {**super().get_config(), "spec": {"cells": self.spec.to_records(),
                                             "min_level": self.min_level,
                                             "max_level": self.max_level},
            "filters": self.filters, "num_repeats": self.num_repeats,
            "min_level": self.min_level, "max_level": self.max_level,
            "global_pool_type": self.global_pool_type, "use_dropblock": self.use_dropblock,
            "dropblock_size": self.dropblock_size, "dropblock_keep_prob": self.dropblock_keep_prob,
            "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn}
