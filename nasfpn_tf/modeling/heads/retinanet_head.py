"""RetinaNet head: class and box subnets shared across levels, batch norm per level."""

from __future__ import annotations

import math
from typing import Mapping

import keras
from keras import ops

from nasfpn_tf.levels import level_key
from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm


# Layer name of the box predictor (the full-int8 TFLite export finds its ops by this name).
BOX_REGRESSOR_NAME = "box_regressor"


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class RetinaNetHead(keras.layers.Layer):
  """Dense class/box predictions on every pyramid level.

  The 3x3 convs are shared by all levels (one detector for all scales), but each
  level gets its own batch norm because feature statistics differ by level
  (Model Garden does the same).

  Args:
    min_level, max_level: levels to predict on ("P{min_level}".."P{max_level}").
    num_classes: number of class logits per anchor (largest category id + 1).
    num_anchors_per_location: anchors per feature-map cell.
    num_convs: conv layers per subnet before the predictor.
    filters: width of those conv layers.
    prior_probability: initial foreground probability; sets the class bias so early
      training is not swamped by background loss (RetinaNet paper, section 4.1).
    norm_momentum, norm_epsilon, use_sync_bn: batch-norm settings.
    use_separable_conv: depthwise-separable 3x3 convs for the subnets and the predictors
      (NAS-FPNLite, Model Garden's option of the same name).

  Call arguments:
    features: {"P3": [B, H3, W3, C], ...}.

  Returns:
    (class_outputs, box_outputs): dicts per level of
    [B, H, W, A * num_classes] and [B, H, W, A * 4].

  Example:
    head = RetinaNetHead(3, 7, num_classes=91, num_anchors_per_location=9)
  """

  def __init__(self, min_level: int = 3, max_level: int = 7, num_classes: int = 91,
               num_anchors_per_location: int = 9, num_convs: int = 4, filters: int = 256,
               prior_probability: float = 0.01, norm_momentum: float = 0.99,
               norm_epsilon: float = 1e-3, use_sync_bn: bool = False,
               use_separable_conv: bool = False, **kwargs):
    super().__init__(**kwargs)
    if min_level > max_level:
      raise ValueError(f"min_level {min_level} > max_level {max_level}")
    if not 0 < prior_probability < 1:
      raise ValueError(f"prior_probability {prior_probability} must be in (0, 1)")
    self.min_level, self.max_level = min_level, max_level
    self.num_classes = num_classes
    self.num_anchors_per_location = num_anchors_per_location
    self.num_convs, self.filters = num_convs, filters
    self.prior_probability = prior_probability
    self.norm_momentum, self.norm_epsilon, self.use_sync_bn = norm_momentum, norm_epsilon, use_sync_bn
    self.use_separable_conv = bool(use_separable_conv)

  @property
  def levels(self) -> list[str]:
    return [level_key(l) for l in range(self.min_level, self.max_level + 1)]

  def _conv(self, filters: int, name: str, stddev: float, bias: float = 0.0):
    if self.use_separable_conv:
      # The pointwise kernel plays the dense kernel's part (its small init keeps the first
      # predictions at the prior). The depthwise kernel keeps the scale of its input (9 taps
      # of std 1/3): Keras' default counts C * 9 inputs per tap and shrinks the depthwise
      # output ~6x at 64 channels, which slows the predictors' learning (NAS-FPNLite on the
      # embedded set at 128 px, 400 steps, one run each: AP 0.015 with it, 0.042 with this).
      return keras.layers.SeparableConv2D(
          filters, 3, padding="same", name=name, dtype=self.dtype_policy,
          depthwise_initializer=keras.initializers.RandomNormal(stddev=1.0 / 3.0),
          pointwise_initializer=keras.initializers.RandomNormal(stddev=stddev),
          bias_initializer=keras.initializers.Constant(bias))
    return keras.layers.Conv2D(
        filters, 3, padding="same", name=name, dtype=self.dtype_policy,
        kernel_initializer=keras.initializers.RandomNormal(stddev=stddev),
        bias_initializer=keras.initializers.Constant(bias))

  def _subnet(self, branch: str):
    convs = [self._conv(self.filters, f"{branch}_conv{i}", 0.01) for i in range(self.num_convs)]
    norms = {lvl: [FusedBatchNorm(
        momentum=self.norm_momentum, epsilon=self.norm_epsilon, synchronized=self.use_sync_bn,
        name=f"{branch}_bn{i}_{lvl}", dtype=self.dtype_policy) for i in range(self.num_convs)]
             for lvl in self.levels}
    return convs, norms

  def build(self, input_shape):
    channels = input_shape[self.levels[0]][-1]
    self.class_convs, self.class_norms = self._subnet("class")
    self.box_convs, self.box_norms = self._subnet("box")
    bias = -math.log((1 - self.prior_probability) / self.prior_probability)
    self.classifier = self._conv(self.num_classes * self.num_anchors_per_location, "classifier",
                                 1e-5, bias)
    self.box_regressor = self._conv(4 * self.num_anchors_per_location, BOX_REGRESSOR_NAME,
                                    1e-5)
    shape = (None, None, None, channels)
    for convs, norms, predictor in ((self.class_convs, self.class_norms, self.classifier),
                                    (self.box_convs, self.box_norms, self.box_regressor)):
      s = shape
      for i, conv in enumerate(convs):
        conv.build(s)
        s = (None, None, None, self.filters)
        for lvl in self.levels:
          norms[lvl][i].build(s)
      predictor.build(s)

  def _tower(self, x, convs, norms):
    for conv, norm in zip(convs, norms):
      x = ops.relu(norm(conv(x)))
    return x

  def call(self, features: Mapping, training=None):
    class_outputs, box_outputs = {}, {}
    for lvl in self.levels:
      x = features[lvl]
      class_outputs[lvl] = self.classifier(
          self._tower(x, self.class_convs, self.class_norms[lvl]))
      box_outputs[lvl] = self.box_regressor(self._tower(x, self.box_convs, self.box_norms[lvl]))
    return class_outputs, box_outputs

  def compute_output_shape(self, input_shape):
    a = self.num_anchors_per_location
    cls = {l: tuple(input_shape[l][:-1]) + (a * self.num_classes,) for l in self.levels}
    box = {l: tuple(input_shape[l][:-1]) + (a * 4,) for l in self.levels}
    return cls, box

  def get_config(self) -> dict:
    return {**super().get_config(), "min_level": self.min_level, "max_level": self.max_level,
            "num_classes": self.num_classes,
            "num_anchors_per_location": self.num_anchors_per_location,
            "num_convs": self.num_convs, "filters": self.filters,
            "prior_probability": self.prior_probability, "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon, "use_sync_bn": self.use_sync_bn,
            "use_separable_conv": self.use_separable_conv}
