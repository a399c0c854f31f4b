"""The NAS-FPN merging cell: resample two inputs to one level, merge, ReLU-conv-BN."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import keras
from keras import ops

from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm
from nasfpn_tf.modeling.layers.dropblock import DropBlock
from nasfpn_tf.modeling.layers.merge_ops import MERGE_OPS, POOL_TYPES, merge
from nasfpn_tf.modeling.layers.resample import (Resample, initializer_config, make_initializer,
                                                resampled_size)


def combine_inputs(feats: Sequence, input_levels: Sequence[int], op: str,
                   global_pool_type: str = "max"):
  """Merges already-resampled inputs: `op` on the first two, then adds the extras.

  Shared by `MergingCell` and the one-shot supernet, so both compute the same cell.
  """
  x = merge(op, feats[0], feats[1], input_levels[0], input_levels[1], global_pool_type)
  for extra in feats[2:]:
    x = x + extra
  return x


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class MergingCell(keras.layers.Layer):
  """One merging cell of the NAS-FPN search space (paper, section 3).

  Every input is brought to `target_level` (1x1 conv + BN where its width is not
  `filters`, then nearest upsampling or max pooling), the first two are merged with
  `op`, any further inputs are added (the output rule: an output cell absorbs the
  same-level maps no cell consumed), then ReLU -> Conv3x3 -> BN (-> DropBlock).
  With `use_separable_conv` the 3x3 conv is depthwise-separable (NAS-FPNLite); the 1x1
  projections stay plain convs (a separable 1x1 would only add a per-channel scale).

  Args:
    input_levels: original pyramid level of each input; the first two are the
      cell's operands, further ones are extra addends.
    target_level: level of the output.
    op: "sum" or "global_pool". For "global_pool" the input from the coarser
      original level gates the other (ties: the first input).
    filters: output channels.
    global_pool_type: "max" (TF reference) or "avg" (mmdetection).
    use_dropblock, dropblock_keep_prob, dropblock_size: optional DropBlock after BN.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    kernel_initializer: for the convs (both kernels of a separable one); None is Model
      Garden's VarianceScaling(2.0, "fan_out", "untruncated_normal").
    use_separable_conv: depthwise 3x3 + pointwise 1x1 instead of a full 3x3 conv.

  Call arguments:
    inputs: list of [B, H_i, W_i, C_i] tensors, one per `input_levels` entry.
    training: batch-norm / DropBlock mode.

  Returns:
    [B, H, W, filters] at `target_level`.

  Example:
    cell = MergingCell([4, 6], target_level=4, op="global_pool", filters=256)
    p4_new = cell([p4, p6])
  """

  def __init__(self, input_levels: Sequence[int], target_level: int, op: str = "sum",
               filters: int = 256, global_pool_type: str = "max", use_dropblock: bool = False,
               dropblock_keep_prob: float = 0.9, dropblock_size: int = 3,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_initializer: Any = None,
               use_separable_conv: bool = False, **kwargs):
    super().__init__(**kwargs)
    if len(input_levels) < 2:
      raise ValueError(f"a merging cell needs at least 2 inputs, got levels {list(input_levels)}")
    if op not in MERGE_OPS:
      raise ValueError(f"op '{op}' is not one of {list(MERGE_OPS)}")
    if global_pool_type not in POOL_TYPES:
      raise ValueError(f"global_pool_type '{global_pool_type}' is not one of {list(POOL_TYPES)}")
    if filters < 1:
      raise ValueError(f"filters {filters} must be >= 1")
    self.input_levels = [int(l) for l in input_levels]
    self.target_level, self.op, self.filters = int(target_level), op, filters
    self.global_pool_type = global_pool_type
    self.use_dropblock = use_dropblock
    self.dropblock_keep_prob, self.dropblock_size = dropblock_keep_prob, dropblock_size
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn
    self.kernel_initializer = initializer_config(kernel_initializer)
    self.use_separable_conv = bool(use_separable_conv)

  def _make_conv(self) -> keras.layers.Layer:
    if self.use_separable_conv:
      return keras.layers.SeparableConv2D(
          self.filters, 3, padding="same", name="conv", dtype=self.dtype_policy,
          depthwise_initializer=make_initializer(self.kernel_initializer),
          pointwise_initializer=make_initializer(self.kernel_initializer))
    return keras.layers.Conv2D(
        self.filters, 3, padding="same", name="conv", dtype=self.dtype_policy,
        kernel_initializer=make_initializer(self.kernel_initializer))

  def build(self, input_shape):
    input_shape = [tuple(s) for s in input_shape]
    if len(input_shape) != len(self.input_levels):
      raise ValueError(f"MergingCell '{self.name}' got {len(input_shape)} inputs for "
                       f"input_levels {self.input_levels}")
    self.resamplers = []
    for i, (shape, level) in enumerate(zip(input_shape, self.input_levels)):
      layer = Resample(level, self.target_level, self.filters, self.norm_momentum,
                       self.norm_epsilon, self.use_sync_bn, self.kernel_initializer,
                       name=f"resample_{i}_P{level}", dtype=self.dtype_policy)
      layer.build(shape)
      self.resamplers.append(layer)
    self.conv = self._make_conv()
    self.conv.build((None, None, None, self.filters))
    self.norm = FusedBatchNorm(
        momentum=self.norm_momentum, epsilon=self.norm_epsilon, synchronized=self.use_sync_bn,
        name="bn", dtype=self.dtype_policy)
    self.norm.build((None, None, None, self.filters))
    self.dropblock = None
    if self.use_dropblock:
      self.dropblock = DropBlock(self.dropblock_keep_prob, self.dropblock_size, name="dropblock",
                                 dtype=self.dtype_policy)
      self.dropblock.build((None, None, None, self.filters))

  def call(self, inputs, training=None):
    feats = [r(x, training=training) for r, x in zip(self.resamplers, inputs)]
    x = combine_inputs(feats, self.input_levels, self.op, self.global_pool_type)
    x = self.norm(self.conv(ops.relu(x)), training=training)
    if self.dropblock is not None:
      x = self.dropblock(x, training=training)
    return x

  def compute_output_shape(self, input_shape):
    b, h, w, _ = input_shape[0]
    src = self.input_levels[0]
    return (b, resampled_size(h, src, self.target_level),
            resampled_size(w, src, self.target_level), self.filters)

  def get_config(self) -> dict:
    return {**super().get_config(), "input_levels": list(self.input_levels),
            "target_level": self.target_level, "op": self.op, "filters": self.filters,
            "global_pool_type": self.global_pool_type, "use_dropblock": self.use_dropblock,
            "dropblock_keep_prob": self.dropblock_keep_prob,
            "dropblock_size": self.dropblock_size, "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn,
            "kernel_initializer": copy.deepcopy(self.kernel_initializer),
            "use_separable_conv": self.use_separable_conv}
