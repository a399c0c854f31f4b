"""ResNet backbones (He et al. 2016, v1.5 strides) returning C3..C5 as "P3".."P5".

Depths 10/18/34 use basic blocks, 50/101 bottlenecks, as in Model Garden
(ResNet-10 is the paper's proxy-task backbone). Convolutions have no bias
because every one is followed by batch norm.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from nasfpn_tf.levels import level_key
from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm

# depth -> (block kind, blocks per stage C2..C5)
RESNET_SPECS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _conv(filters: int, kernel: int, strides: int, name: str) -> keras.layers.Conv2D:
  return keras.layers.Conv2D(
      filters, kernel, strides=strides, padding="same", use_bias=False, name=name,
      kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"))


class _Norm:
  """Makes batch-norm layers with one set of settings."""

  def __init__(self, momentum: float, epsilon: float, sync: bool):
    self.kwargs = {"momentum": momentum, "epsilon": epsilon, "synchronized": sync}

  def __call__(self, name: str) -> FusedBatchNorm:
    return FusedBatchNorm(name=name, **self.kwargs)


def _basic_block(x, filters: int, strides: int, project: bool, norm: _Norm, name: str):
  shortcut = x
  if project:
    shortcut = norm(f"{name}_proj_bn")(_conv(filters, 1, strides, f"{name}_proj")(x))
  x = keras.layers.ReLU()(norm(f"{name}_bn1")(_conv(filters, 3, strides, f"{name}_conv1")(x)))
  x = norm(f"{name}_bn2")(_conv(filters, 3, 1, f"{name}_conv2")(x))
  return keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))


def _bottleneck_block(x, filters: int, strides: int, project: bool, norm: _Norm, name: str):
  shortcut = x
  if project:
    shortcut = norm(f"{name}_proj_bn")(_conv(4 * filters, 1, strides, f"{name}_proj")(x))
  x = keras.layers.ReLU()(norm(f"{name}_bn1")(_conv(filters, 1, 1, f"{name}_conv1")(x)))
  # v1.5: the stride sits on the 3x3 conv.
  x = keras.layers.ReLU()(norm(f"{name}_bn2")(_conv(filters, 3, strides, f"{name}_conv2")(x)))
  x = norm(f"{name}_bn3")(_conv(4 * filters, 1, 1, f"{name}_conv3")(x))
  return keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))


def build_resnet(depth: int = 50, input_shape: Sequence[Optional[int]] = (None, None, 3),
                 width_multiplier: float = 1.0, norm_momentum: float = 0.99,
                 norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
                 weights_path: str = "") -> keras.Model:
  """Builds a ResNet feature extractor.

  Args:
    depth: 10, 18, 34, 50 or 101.
    input_shape: (height, width, 3); None dims allowed.
    width_multiplier: scales every stage width (1.0 = standard ResNet).
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    weights_path: optional local `.weights.h5` file saved from a model built with the
      same arguments; nothing is downloaded.

  Returns:
    A `keras.Model` from images to {"P3": C3, "P4": C4, "P5": C5} (strides 8, 16, 32).
  """
  if depth not in RESNET_SPECS:
    raise ValueError(f"ResNet depth {depth} not supported; choose from {sorted(RESNET_SPECS)}")
  kind, blocks = RESNET_SPECS[depth]
  block_fn = _basic_block if kind == "basic" else _bottleneck_block
  norm = _Norm(norm_momentum, norm_epsilon, use_sync_bn)
  width = lambda f: max(8, int(round(f * width_multiplier)))

  inputs = keras.Input(shape=tuple(input_shape), name="image")
  x = _conv(width(64), 7, 2, "stem_conv")(inputs)
  x = keras.layers.ReLU()(norm("stem_bn")(x))
  x = keras.layers.MaxPool2D(3, 2, padding="same", name="stem_pool")(x)
  outputs = {}
  for stage, (num_blocks, filters) in enumerate(zip(blocks, (64, 128, 256, 512)), start=2):
    for b in range(num_blocks):
      strides = 2 if (b == 0 and stage > 2) else 1
      x = block_fn(x, width(filters), strides, b == 0, norm, f"c{stage}_block{b}")
    if stage >= 3:
      outputs[level_key(stage)] = x
  model = keras.Model(inputs, outputs, name=f"resnet{depth}")
  if weights_path:
    model.load_weights(weights_path)
  return model
