"""MobileNetV2 backbone (Sandler et al. 2018) returning strides 8/16/32 as "P3".."P5".

The network is `keras.applications.MobileNetV2`, not a re-implementation: its layer names,
its width rounding and its ImageNet weights come with it. We only
  * take the last block of each stride as the pyramid input, as Model Garden's MobileNetV2
    backbone does (strides 8, 16, 32: `block_5_add`, `block_12_add`, `block_16_project_BN`;
    the final 1x1 conv to 1280 channels, a classifier's layer, is left out);
  * put our batch-norm settings (and the fused kernel, see `FusedBatchNorm`) in place of
    Keras' defaults (momentum 0.999), copying any loaded weights over;
  * start with a fixed per-channel affine that turns the RetinaNet input normalisation
    ((x - ImageNet mean) / std) back into the [-1, 1] range keras.applications' ImageNet
    weights were trained on, so that `weights="imagenet"` sees the inputs it expects.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import keras

from nasfpn_tf.configs.experiment import MOBILENET_V2_IMAGENET_WIDTHS
from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm

# Pyramid level -> the keras.applications layer whose output it is (last block per stride).
ENDPOINTS = {"P3": "block_5_add", "P4": "block_12_add", "P5": "block_16_project_BN"}
# The RetinaNet model's input normalisation (retinanet_model.PIXEL_MEAN / PIXEL_STD), repeated
# here rather than imported: retinanet_model imports the training stack, a backbone should not.
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)


def _check_weights(weights: str, width_multiplier: float) -> Optional[str]:
  """keras.applications' `weights` argument from ours ("" = random initialisation)."""
  if not weights:
    return None
  if weights == "imagenet":
    if width_multiplier not in MOBILENET_V2_IMAGENET_WIDTHS:
      raise ValueError(f"MobileNetV2 ImageNet weights exist for width_multiplier in "
                       f"{list(MOBILENET_V2_IMAGENET_WIDTHS)}, not {width_multiplier}")
    return weights
  if not os.path.isfile(weights):
    raise ValueError(f"MobileNetV2 weights file '{weights}' does not exist")
  return weights


def _with_our_batch_norm(model: keras.Model, momentum: float, epsilon: float,
                         sync: bool) -> keras.Model:
  """A copy of `model` whose BatchNormalization layers are `FusedBatchNorm` with our settings."""

  def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
      config.update(momentum=momentum, epsilon=epsilon, synchronized=sync)
      return FusedBatchNorm.from_config(config)
    return layer.__class__.from_config(config)

  copy = keras.models.clone_model(model, clone_function=clone)
  for layer in copy.layers:  # same names, same weight order (FusedBatchNorm subclasses BN)
    if layer.weights:
      layer.set_weights(model.get_layer(layer.name).get_weights())
  return copy


def build_mobilenet_v2(input_shape: Sequence[Optional[int]] = (None, None, 3),
                       width_multiplier: float = 1.0, norm_momentum: float = 0.99,
                       norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
                       weights: str = "") -> keras.Model:
  """Builds a MobileNetV2 feature extractor from `keras.applications.MobileNetV2`.

  Args:
    input_shape: (height, width, 3); None dims allowed.
    width_multiplier: keras.applications' `alpha` (1.0 = standard MobileNetV2); channel
      counts are rounded to multiples of 8 by Keras.
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    weights: "" for random initialisation (nothing is downloaded), "imagenet" to let Keras
      download its ImageNet weights (needs the network and a width in
      `MOBILENET_V2_IMAGENET_WIDTHS`), or
      a local weights file for `keras.applications.MobileNetV2(include_top=False)` at this
      width (e.g. Keras' `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`).

  Returns:
    A `keras.Model` from normalised images to {"P3", "P4", "P5"} (strides 8, 16, 32).

  Example:
    backbone = build_mobilenet_v2((320, 320, 3), width_multiplier=0.5)
    backbone.output["P5"].shape  # (None, 10, 10, 160)
  """
  if width_multiplier <= 0:
    raise ValueError(f"width_multiplier {width_multiplier} must be > 0")
  keras_weights = _check_weights(weights, width_multiplier)
  shape = tuple(input_shape)
  base = keras.applications.MobileNetV2(input_shape=shape, alpha=width_multiplier,
                                        include_top=False, weights=keras_weights)
  base = _with_our_batch_norm(base, norm_momentum, norm_epsilon, use_sync_bn)
  features = keras.Model(base.input, {k: base.get_layer(n).output for k, n in ENDPOINTS.items()})

  inputs = keras.Input(shape=shape, name="image")
  # (x - mean) / std  ->  x / 127.5 - 1, per channel.
  to_unit_range = keras.layers.Rescaling(
      scale=[s / 127.5 for s in _PIXEL_STD], offset=[(m - 127.5) / 127.5 for m in _PIXEL_MEAN],
      name="to_minus_one_one")
  return keras.Model(inputs, features(to_unit_range(inputs)),
                     name=f"mobilenet_v2_{width_multiplier:g}")
