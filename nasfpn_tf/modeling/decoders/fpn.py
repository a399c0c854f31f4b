"""Feature Pyramid Network decoder (Lin et al. 2017), laid out as Model Garden's.

Lateral 1x1 convs bring the backbone levels to `filters`, a top-down pass adds
each coarser level (nearest-neighbour upsampled) into the finer one, and 3x3
convs smooth the sums. Levels above the backbone's come from stride-2 3x3 convs
(P6 from the P5 3x3 output, P7 from ReLU(P6)), as RetinaNet makes them. Every
output level then gets its own batch norm (Model Garden normalises after the
whole pyramid is built, so P6 is computed from the un-normalised P5). All convs
have biases.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import keras
from keras import ops

from nasfpn_tf.levels import key_level, level_key
from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm
from nasfpn_tf.modeling.layers.resample import initializer_config, make_initializer


def _model_garden_fpn_initializer() -> keras.initializers.Initializer:
  # Model Garden's FPN passes the string "VarianceScaling": Keras' defaults
  # (scale 1, fan_in, truncated normal), unlike its NAS-FPN.
  return keras.initializers.VarianceScaling()


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class FPN(keras.layers.Layer):
  """Top-down feature pyramid.

  Args:
    min_level, max_level: output levels ("P{min_level}".."P{max_level}").
    filters: channels of every output level.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    kernel_initializer: for every conv; None is Model Garden's FPN default,
      `VarianceScaling()` (scale 1, fan_in, truncated normal).

  Call arguments:
    features: backbone features {"P3": ..., "P5": ...} covering min_level up to some
      level (contiguous; keys above max_level are ignored), e.g. ResNet's C3..C5.
    training: batch-norm mode.

  Returns:
    {"P3": [B, H/8, W/8, filters], ..., "P7": [B, H/128, W/128, filters]}.

  Example:
    fpn = FPN(3, 7, filters=256)
    pyramid = fpn({"P3": c3, "P4": c4, "P5": c5})
  """

  def __init__(self, min_level: int = 3, max_level: int = 7, filters: int = 256,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_initializer: Any = None, **kwargs):
    super().__init__(**kwargs)
    if min_level > max_level:
      raise ValueError(f"min_level {min_level} > max_level {max_level}")
    if filters < 1:
      raise ValueError(f"filters {filters} must be >= 1")
    self.min_level, self.max_level, self.filters = min_level, max_level, filters
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn
    self.kernel_initializer = initializer_config(kernel_initializer)

  def _input_levels(self, input_shape: Mapping) -> list[int]:
    if not isinstance(input_shape, Mapping):
      raise ValueError(f"FPN takes a dict of backbone features keyed 'P3'..; got "
                       f"{type(input_shape).__name__}")
    levels = sorted(key_level(k) for k in input_shape
                    if self.min_level <= key_level(k) <= self.max_level)
    if not levels or levels[0] != self.min_level:
      raise ValueError(f"FPN needs backbone level P{self.min_level}; got {sorted(input_shape)}")
    if levels != list(range(levels[0], levels[-1] + 1)):
      raise ValueError(f"FPN needs contiguous backbone levels from P{self.min_level}; got "
                       f"{sorted(input_shape)}")
    return levels

  def _conv(self, kernel: int, name: str, strides: int = 1):
    return keras.layers.Conv2D(
        self.filters, kernel, strides=strides, padding="same", name=name,
        kernel_initializer=make_initializer(self.kernel_initializer, _model_garden_fpn_initializer),
        dtype=self.dtype_policy)

  def build(self, input_shape):
    self.backbone_levels = self._input_levels(input_shape)
    top = self.backbone_levels[-1]
    # Sublayers keyed "P3".. (see nasfpn_tf.levels), created level by level in this order,
    # which fixes the order of `weights` and the .weights.h5 layout.
    self.laterals, self.smooths = {}, {}
    for level in self.backbone_levels:
      key = level_key(level)
      self.laterals[key] = self._conv(1, f"lateral_conv_{key}")
      self.laterals[key].build(tuple(input_shape[key]))
      self.smooths[key] = self._conv(3, f"output_conv_{key}")
      self.smooths[key].build((None, None, None, self.filters))
    self.extra = {}
    for level in range(top + 1, self.max_level + 1):
      key = level_key(level)
      self.extra[key] = self._conv(3, f"downsample_conv_{key}", strides=2)
      self.extra[key].build((None, None, None, self.filters))
    self.norms = {}
    for level in range(self.min_level, self.max_level + 1):
      key = level_key(level)
      self.norms[key] = FusedBatchNorm(
          momentum=self.norm_momentum, epsilon=self.norm_epsilon, synchronized=self.use_sync_bn,
          name=f"output_bn_{key}", dtype=self.dtype_policy)
      self.norms[key].build((None, None, None, self.filters))

  def call(self, features: Mapping, training=None):
    levels = self.backbone_levels
    lateral = {l: self.laterals[level_key(l)](features[level_key(l)]) for l in levels}
    for finer, coarser in zip(reversed(levels[:-1]), reversed(levels[1:])):
      up = ops.repeat(ops.repeat(lateral[coarser], 2, axis=1), 2, axis=2)
      lateral[finer] = lateral[finer] + up
    outputs = {l: self.smooths[level_key(l)](lateral[l]) for l in levels}
    for level in range(levels[-1] + 1, self.max_level + 1):
      below = outputs[level - 1]
      # P6 straight from P5's 3x3 output; P7 and above from ReLU of the level below.
      outputs[level] = self.extra[level_key(level)](
          ops.relu(below) if level > levels[-1] + 1 else below)
    return {level_key(l): self.norms[level_key(l)](outputs[l], training=training)
            for l in range(self.min_level, self.max_level + 1)}

  def compute_output_shape(self, input_shape):
    base = tuple(input_shape[level_key(self.min_level)])
    out = {}
    for level in range(self.min_level, self.max_level + 1):
      factor = 2 ** (level - self.min_level)
      h = None if base[1] is None else -(-base[1] // factor)
      w = None if base[2] is None else -(-base[2] // factor)
      out[level_key(level)] = (base[0], h, w, self.filters)
    return out

  def get_config(self) -> dict:
    return {**super().get_config(), "min_level": self.min_level, "max_level": self.max_level,
            "filters": self.filters, "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn,
            "kernel_initializer": copy.deepcopy(self.kernel_initializer)}
