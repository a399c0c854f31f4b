"""RetinaNet as a Keras model that works with plain fit / evaluate / predict.

`call` returns raw, flattened head outputs (what the loss needs); `predict_step`
adds decoding and NMS, so `model.predict(images)` returns detections.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nasfpn_tf.losses.retinanet_loss import retinanet_losses
from nasfpn_tf.modeling.layers.detection_generator import DetectionGenerator
from nasfpn_tf.ops.anchor import AnchorGenerator

# ImageNet statistics in 0..255 pixel units: backbones expect this normalisation.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def _flatten_levels(outputs: Mapping, levels: Sequence[str], width: int):
  """{"P3": [B, H, W, A * width], ...} -> [B, sum(H * W * A), width] in anchor order."""
  flat = [ops.reshape(outputs[lvl], (ops.shape(outputs[lvl])[0], -1, width)) for lvl in levels]
  return ops.concatenate(flat, axis=1)


def _global_sum(value):
  """Sums a per-replica scalar over replicas (identity outside a multi-replica step)."""
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return value
  return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class RetinaNetModel(keras.Model):
  """Backbone -> decoder -> head, with RetinaNet loss and detection output.

  Args:
    backbone: a model from images to {"P3": C3, ...}.
    decoder: a layer from backbone features to {"P3".."P7"} (FPN, NAS-FPN, ...).
    head: a `RetinaNetHead`.
    num_classes: class logits per anchor.
    input_size: (height, width) the model is built for (anchors are fixed to it).
    anchor_generator: anchors (default: RetinaNet's 3 scales x 3 ratios, size 4).
    detection_generator: post-processing (default: Model Garden's settings).
    focal_alpha, focal_gamma, huber_delta, box_loss_weight: loss settings.
    l2_weight_decay: Model Garden's weight decay: (l2_weight_decay / 2) * the sum of squared
      conv kernels is added to the loss, so its gradient is l2_weight_decay * kernel and, with
      SGD, goes through momentum. Biases and batch norm are not decayed. 0: none.

  Call arguments:
    images: float [B, H, W, 3] in 0..255 (already resized/padded to `input_size`).

  Returns:
    {"cls_outputs": [B, N, num_classes] logits, "box_outputs": [B, N, 4] deltas}.
  """

  def __init__(self, backbone: keras.Model, decoder: keras.layers.Layer,
               head: keras.layers.Layer, num_classes: int, input_size: Sequence[int],
               min_level: int = 3, max_level: int = 7,
               anchor_generator: Optional[AnchorGenerator] = None,
               detection_generator: Optional[DetectionGenerator] = None,
               focal_alpha: float = 0.25, focal_gamma: float = 1.5, huber_delta: float = 0.1,
               box_loss_weight: float = 50.0, l2_weight_decay: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.backbone, self.decoder, self.head = backbone, decoder, head
    self.num_classes = num_classes
    self.input_size = [int(s) for s in input_size]
    self.min_level, self.max_level = min_level, max_level
    self.anchor_generator = anchor_generator or AnchorGenerator(min_level, max_level)
    anchors = self.anchor_generator(self.input_size)
    self.levels = list(anchors)
    self.anchors = np.concatenate(list(anchors.values()), 0)
    self.detection_generator = detection_generator or DetectionGenerator(
        [len(a) for a in anchors.values()], self.input_size)
    self.loss_settings = {"focal_alpha": focal_alpha, "focal_gamma": focal_gamma,
                          "huber_delta": huber_delta, "box_loss_weight": box_loss_weight}
    self.l2_weight_decay = float(l2_weight_decay)
    self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
    self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
    self.positives_tracker = keras.metrics.Mean(name="positives_per_image")

  def build(self, input_shape=None):
    """Builds every part from the fixed input size (shapes flow backbone -> decoder -> head)."""
    if self.built:
      return
    feature_shapes = {k: tuple(v.shape) for k, v in self.backbone.output.items()}
    # Parts deserialised from a .keras file arrive built already.
    if not self.decoder.built:
      self.decoder.build(feature_shapes)
    if not self.head.built:
      self.head.build(self.decoder.compute_output_shape(feature_shapes))
    self.built = True

  @property
  def num_anchors(self) -> int:
    return int(self.anchors.shape[0])

  def call(self, images, training=None):
    return self.flatten_outputs(*self.level_outputs(images, training=training))

  def level_outputs(self, images, training=None) -> tuple[dict, dict]:
    """The head's outputs per level, before `call` flattens them.

    Returns:
      ({"P3": [B, H3, W3, A * num_classes], ...}, {"P3": [B, H3, W3, A * 4], ...}).
    """
    x = (ops.cast(images, self.compute_dtype) - ops.array(PIXEL_MEAN, self.compute_dtype)) / \
        ops.array(PIXEL_STD, self.compute_dtype)
    features = self.decoder(self.backbone(x, training=training), training=training)
    return self.head(features, training=training)

  def flatten_outputs(self, cls: Mapping, box: Mapping) -> dict:
    """Per-level head outputs -> `call`'s {"cls_outputs": [B, N, C], "box_outputs": [B, N, 4]}."""
    return {"cls_outputs": ops.cast(_flatten_levels(cls, self.levels, self.num_classes), "float32"),
            "box_outputs": ops.cast(_flatten_levels(box, self.levels, 4), "float32")}

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    del x, sample_weight
    positives = ops.sum(ops.cast(y["cls_targets"] >= 0, "float32"))
    # Normalise by the positives of the whole global batch so that the sum of the
    # replicas' losses is exactly the single-device loss on the same batch.
    global_positives = _global_sum(positives)
    losses = retinanet_losses(y, y_pred["cls_outputs"], y_pred["box_outputs"], self.num_classes,
                              **self.loss_settings)
    scale = (positives + 1.0) / (global_positives + 1.0)
    total = losses["total_loss"] * scale
    if self.l2_weight_decay:
      # Every replica adds its share: the replicas' losses are summed into the global one.
      ctx = tf.distribute.get_replica_context()
      replicas = ctx.num_replicas_in_sync if ctx is not None else 1
      total = total + self.l2_loss() / replicas
    batch = ops.cast(ops.shape(y["cls_targets"])[0], "float32")
    self.cls_loss_tracker.update_state(losses["cls_loss"])
    self.box_loss_tracker.update_state(losses["box_loss"])
    self.positives_tracker.update_state(positives / batch)
    return total

  def l2_loss(self):
    """(l2_weight_decay / 2) * sum of squared conv kernels (tf.nn.l2_loss's form)."""
    kernels = [v for v in self.trainable_variables if v.name.endswith("kernel")]
    return self.l2_weight_decay * 0.5 * ops.sum(
        ops.stack([ops.sum(ops.square(ops.cast(k, "float32"))) for k in kernels]))

  def predict_step(self, data):
    images = data[0] if isinstance(data, (tuple, list)) else data
    return self.detect(images)

  def detect(self, images) -> dict:
    """Detections for a batch of preprocessed images (boxes in input pixels)."""
    outputs = self(images, training=False)
    return self.detection_generator(outputs["cls_outputs"], outputs["box_outputs"],
                                    self.anchors)

  def export(self, filepath, format: str = "tf_saved_model", verbose=None,
             input_signature=None, **kwargs):
    """Keras' `model.export`, writing this package's serving artifacts.

    `format="tf_saved_model"` writes the SavedModel `run.py --mode=export` writes (without
    the label map and config beside it): signatures serving_default (uint8 [B, H, W, 3]
    images of any size, detections in their own pixels, NMS in the graph), serve_encoded
    (JPEG/PNG/... bytes) and serve_raw (head outputs); see `nasfpn_tf.serving`.
    `format="litert"` writes one TFLite file (path ending in .tflite) with signatures
    serving_default (fixed [1, H, W, 3] preprocessed input, padded NMS in the file) and raw,
    TFLite builtin ops only. Keras' own versions would export `call` alone (head outputs,
    no NMS) under one "serve" signature. Other formats ("onnx", "openvino") are Keras' own.

    Args:
      filepath: the SavedModel folder, or the .tflite file.
      format: "tf_saved_model", "litert", or another format of Keras' `export`.
      verbose: print where the artifact went (default: yes, as Keras).
      input_signature: only for Keras' other formats; the serving signatures are fixed.
      **kwargs: tf_saved_model: `batch_size` (static batch of the signatures, None: any).
        litert: `variant` (one of `export_lib.TFLITE_VARIANTS`, default "float32") and
        `calibration` (full_int8: preprocessed float32 [n, H, W, 3] images).

    Example:
      model.export("export/saved_model")                      # tf.saved_model.load(...)
      model.export("export/model.tflite", format="litert")    # LiteRT interpreter
    """
    if format not in ("tf_saved_model", "litert"):
      return super().export(filepath, format=format, verbose=verbose,
                            input_signature=input_signature, **kwargs)
    if input_signature is not None:
      raise ValueError(f"RetinaNetModel.export(format={format!r}) writes fixed serving "
                       "signatures; input_signature is not taken (batch_size sets the "
                       "SavedModel's batch)")
    allowed = {"tf_saved_model": {"batch_size"}, "litert": {"variant", "calibration"}}[format]
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
      raise TypeError(f"RetinaNetModel.export(format={format!r}): unknown options {unknown} "
                      f"(it takes {sorted(allowed)})")
    # Imported here: the serving code imports the model's parts.
    from nasfpn_tf.serving import export_lib
    filepath = str(filepath)
    if format == "tf_saved_model":
      path = export_lib.write_saved_model(self, filepath, **kwargs)
    else:
      if not filepath.endswith(".tflite"):
        raise ValueError(f"The LiteRT export requires the filepath to end with '.tflite'. "
                         f"Got: {filepath}")
      path = export_lib.write_tflite(self, filepath, **kwargs)
    if verbose is None or verbose:
      print(f"Saved artifact at '{path}'.")
    return None

  def get_config(self) -> dict:
    return {
        "backbone": keras.saving.serialize_keras_object(self.backbone),
        "decoder": keras.saving.serialize_keras_object(self.decoder),
        "head": keras.saving.serialize_keras_object(self.head),
        "num_classes": self.num_classes, "input_size": self.input_size,
        "min_level": self.min_level, "max_level": self.max_level,
        "anchor_generator": self.anchor_generator.get_config(),
        "detection_generator": keras.saving.serialize_keras_object(self.detection_generator),
        **self.loss_settings, "l2_weight_decay": self.l2_weight_decay, "name": self.name,
    }

  @classmethod
  def from_config(cls, config: dict) -> "RetinaNetModel":
    config = dict(config)
    for key in ("backbone", "decoder", "head", "detection_generator"):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    config["anchor_generator"] = AnchorGenerator(**config["anchor_generator"])
    return cls(**config)
