"""Moving a feature map between pyramid levels (NAS-FPN paper, section 3).

Going to a finer level: nearest-neighbour upsampling by 2**delta. Going to a
coarser level: max pooling with pool = stride = 2**delta, 'same' padding.
Channels are matched by a 1x1 conv + batch norm (no activation) only when they
differ (in practice only backbone features need it).

Also home of the kernel-initializer helpers the decoder layers share, so that an
initializer argument is stored literally in `get_config` and every conv gets its
own fresh instance.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import keras
from keras import ops

from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm


def model_garden_conv_initializer() -> keras.initializers.Initializer:
  """Model Garden's NAS-FPN conv initializer (it ignores its own `kernel_initializer` arg)."""
  return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def initializer_config(value: Any) -> Any:
  """A serialisable form of an initializer argument: None, a name or a config dict as given,
  an `Initializer` object as its Keras serialisation."""
  if value is None or isinstance(value, (str, dict)):
    return copy.deepcopy(value)
  if isinstance(value, keras.initializers.Initializer):
    return keras.initializers.serialize(value)
  raise ValueError(f"kernel_initializer {value!r} is not None, a name, a config dict or an "
                   "Initializer")


def make_initializer(config: Any, default: Callable[[], keras.initializers.Initializer] =
                     model_garden_conv_initializer) -> keras.initializers.Initializer:
  """A fresh initializer from `initializer_config` output; None means `default()`.

  Fresh per conv: sharing one seeded instance would give several convs identical kernels.
  """
  if config is None:
    return default()
  return keras.initializers.get(copy.deepcopy(config))


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


def resampled_size(size: Optional[int], source_level: int, target_level: int) -> Optional[int]:
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
    filters: output channels; a 1x1 conv (with bias, as Model Garden) + BN is added
      only if the input width differs.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    kernel_initializer: for the 1x1 conv; None is Model Garden's
      VarianceScaling(2.0, "fan_out", "untruncated_normal").

  Call arguments:
    x: [B, H, W, C].
    training: batch-norm mode.

  Returns:
    [B, H * 2**(source - target), W * 2**(source - target), filters]; going coarser,
    sizes round up ('same' pooling).

  Example:
    p6 = Resample(source_level=5, target_level=6, filters=256)(c5)  # 1x1 conv+BN, max-pool 2
  """

  def __init__(self, source_level: int, target_level: int, filters: int = 256,
               norm_momentum: float = 0.99, norm_epsilon: float = 1e-3,
               use_sync_bn: bool = False, kernel_initializer: Any = None, **kwargs):
    super().__init__(**kwargs)
    if filters < 1:
      raise ValueError(f"filters {filters} must be >= 1")
    self.source_level, self.target_level = int(source_level), int(target_level)
    self.filters = filters
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn
    self.kernel_initializer = initializer_config(kernel_initializer)
    self.project = None  # decided in build() from the input width

  def build(self, input_shape):
    input_shape = tuple(input_shape)  # on .keras reload it arrives as a list
    self.project = input_shape[-1] != self.filters
    if self.project:
      self.conv = keras.layers.Conv2D(
          self.filters, 1, padding="same", name="conv", dtype=self.dtype_policy,
          kernel_initializer=make_initializer(self.kernel_initializer))
      self.conv.build(input_shape)
      self.norm = FusedBatchNorm(
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
            "use_sync_bn": self.use_sync_bn,
            "kernel_initializer": copy.deepcopy(self.kernel_initializer)}
