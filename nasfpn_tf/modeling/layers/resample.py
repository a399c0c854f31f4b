"""Moving a feature map between pyramid levels (NAS-FPN paper, section 3).

Going to a finer level: nearest-neighbour upsampling by 2**delta. Going to a
coarser level: max pooling with pool = stride = 2**delta, 'same' padding.
Channels are matched by a 1x1 conv + batch norm only when they differ (in
practice only backbone features need it).
"""

from __future__ import annotations

import keras
from keras import ops


def resample_to_level(x, source_level: int, target_level: int):
  """Resamples an NHWC tensor from `source_level` to `target_level` (no weights)."""
  delta = target_level - source_level
  if delta < 0:
    factor = 2 ** (-delta)
    return ops.repeat(ops.repeat(x, factor, axis=1), factor, axis=2)
  if delta > 0:
    size = 2 ** delta
    return ops.max_pool(x, pool_size=size, strides=size, padding="same")
  return x


def resampled_size(size, source_level: int, target_level: int):
  """Spatial size after `resample_to_level` (None stays None)."""
  if size is None:
    return None
  delta = target_level - source_level
  return size * 2 ** (-delta) if delta < 0 else -(-size // 2 ** delta)


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class Resample(keras.layers.Layer):
  """Brings a feature map from `source_level` to `target_level` with `filters` channels.

  Args:
    source_level, target_level: pyramid levels (stride 2**level).
    filters: output channels; a 1x1 conv + BN is added only if the input differs.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.

  Call arguments:
    x: [B, H, W, C].

  Returns:
    [B, H * 2**(source - target), W * 2**(source - target), filters].
  """

  def __init__(self, source_level: int, target_level: int, filters: int = 256,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.source_level, self.target_level, self.filters = source_level, target_level, filters
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    self.project = input_shape[-1] != self.filters
    if self.project:
      self.conv = keras.layers.Conv2D(
          self.filters, 1, padding="same", name="conv", dtype=self.dtype_policy,
          kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out",
                                                                "untruncated_normal"))
      self.conv.build(input_shape)
      self.norm = keras.layers.BatchNormalization(
          momentum=self.norm_momentum, epsilon=self.norm_epsilon, synchronized=self.use_sync_bn,
          name="bn", dtype=self.dtype_policy)
      self.norm.build(input_shape[:-1] + (self.filters,))

  def call(self, x, training=None):
    if self.project:
      x = self.norm(self.conv(x), training=training)
    return resample_to_level(x, self.source_level, self.target_level)

  def compute_output_shape(self, input_shape):
    b, h, w, _ = input_shape
    return (b, resampled_size(h, self.source_level, self.target_level),
            resampled_size(w, self.source_level, self.target_level), self.filters)

  def get_config(self) -> dict:
    return {**super().get_config(), "source_level": self.source_level,
            "target_level": self.target_level, "filters": self.filters,
            "norm_momentum": self.norm_momentum, "norm_epsilon": self.norm_epsilon,
            "use_sync_bn": self.use_sync_bn}
