"""Serving graphs around a trained RetinaNet: what the SavedModel and TFLite files run.

Two families of functions:

* SavedModel (`DetectionModule`): images of any size in, detections in the input image's own
  pixels out. `serve_images` takes a uint8 batch [B, H, W, 3], `serve_encoded` a batch of
  JPEG/PNG/GIF/BMP/WebP bytes, `serve_raw` a preprocessed float batch (raw head outputs, for
  parity checks). Images are resized and padded inside the graph with the very function the
  training and evaluation pipelines use (`preprocess.resize_and_crop_image`), and the boxes
  are mapped back with its `image_info`.
* TFLite (`tflite_functions`): a fixed [1, H, W, 3] input at the model's input size (float32,
  or uint8 for the full-int8 file), already preprocessed by the caller (the same function),
  detections in model-input pixels, post-processing by the TFLite-builtin padded NMS so the
  file runs without Python glue.

Bad input fails inside the graph with an InvalidArgumentError whose message names the problem
(zero-sized image, wrong channel count, and for serve_encoded the position in the batch of
the first image that does not decode: not an image, truncated or corrupt); dtype and rank are
checked by the signature itself.

Example:
  module = DetectionModule(model)
  out = module.serve_images(tf.zeros([2, 480, 640, 3], tf.uint8))
  out["detection_boxes"]  # [2, 100, 4] (ymin, xmin, ymax, xmax) in 480x640 pixels
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from nasfpn_tf.data import preprocess
from nasfpn_tf.modeling.heads.retinanet_head import BOX_REGRESSOR_NAME
from nasfpn_tf.modeling.layers.detection_generator import DetectionGenerator

DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
RAW_KEYS = ("cls_outputs", "box_outputs")
# Signatures of every TFLite file, in this order.
TFLITE_SIGNATURES = ("serving_default", "raw")
_FORMAT_NAMES = ", ".join(list(preprocess.IMAGE_FORMATS)[:-1]) + \
    f" or {list(preprocess.IMAGE_FORMATS)[-1]}"

Signature = tuple[Callable, list[tf.TensorSpec]]


def _ensure_shape(x: tf.Tensor, shape: list) -> tf.Tensor:
  # A signature does not stop a client from feeding another rank, and rank asserts get
  # folded away against the signature's static shape; EnsureShape always runs and its
  # message names the tensor, the shape it got and the shape it expected.
  return tf.ensure_shape(x, shape)


def check_image(image: tf.Tensor, what: str) -> tf.Tensor:
  """Asserts that one image is [H, W, 3] with H, W > 0; returns it (after the checks run).

  Args:
    image: a decoded image tensor.
    what: how the message names the image (e.g. "serve_encoded: a decoded image").
  """
  image = _ensure_shape(image, [None, None, 3])
  check = tf.debugging.assert_positive(tf.shape(image)[:2], message=f"{what} has zero height "
                                       "or width (an empty image cannot be resized)")
  with tf.control_dependencies([check]):
    return tf.identity(image)


def check_batch(images: tf.Tensor, what: str) -> tf.Tensor:
  """Asserts a non-empty [B, H, W, 3] batch with H, W > 0; returns it after the checks."""
  images = _ensure_shape(images, [None, None, None, 3])
  shape = tf.shape(images)
  checks = [
      tf.debugging.assert_positive(shape[0], message=f"{what}: the batch holds no image"),
      tf.debugging.assert_positive(shape[1:3], message=f"{what}: the images have zero height "
                                   "or width (an empty image cannot be resized)"),
  ]
  with tf.control_dependencies(checks):
    return tf.identity(images)


def check_decoded(decoded: tf.Tensor, count: tf.Tensor, encoded: tf.Tensor) -> tf.Tensor:
  """Asserts that every image of the batch decoded, naming the first one that did not.

  Args:
    decoded: int32 [n], batch positions of the images that decoded, in order.
    count: how many images the batch holds.
    encoded: the batch (for the failed image's size in the message).

  Returns:
    `decoded`, after the check ran.
  """
  failed = tf.logical_not(tf.reduce_any(tf.equal(tf.range(count)[:, None], decoded[None, :]),
                                        axis=1))
  first = tf.cast(tf.argmax(tf.cast(failed, tf.int32)), tf.int32)
  # The bytes themselves stay out of the message: an error text that is not UTF-8 breaks
  # the client that tries to print it.
  check = tf.debugging.Assert(tf.equal(tf.size(decoded), count), [
      "serve_encoded: image", first, "of the batch (", tf.strings.length(encoded[first]),
      f"bytes) is not a {_FORMAT_NAMES} file, or is truncated or corrupt"])
  with tf.control_dependencies([check]):
    return tf.identity(decoded)


def boxes_to_image_frame(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
  """Model-input boxes -> pixels of the original image (inverse of the preprocessing).

  Args:
    boxes: float32 [B, N, 4] (ymin, xmin, ymax, xmax) in model-input pixels.
    image_info: float32 [B, 4, 2] from `resize_and_crop_image` (see preprocess.py).

  Returns:
    float32 [B, N, 4] boxes, clipped to the original image.
  """
  # preprocess: p_input = p_image * scale - offset, so p_image = (p_input + offset) / scale.
  scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])
  offset = tf.tile(image_info[:, 3:4, :], [1, 1, 2])
  size = tf.tile(image_info[:, 0:1, :], [1, 1, 2])
  return tf.clip_by_value((boxes + offset) / scale, 0.0, size)


def _mask_padding(detections: dict) -> dict:
  """Zeroes the padded rows (index >= num_detections) so they never look like boxes."""
  max_det = tf.shape(detections["detection_scores"])[1]
  valid = tf.range(max_det)[None, :] < detections["num_detections"][:, None]
  out = dict(detections)
  out["detection_boxes"] = tf.where(valid[..., None], detections["detection_boxes"], 0.0)
  out["detection_scores"] = tf.where(valid, detections["detection_scores"], 0.0)
  out["detection_classes"] = tf.where(valid, detections["detection_classes"], 0)
  return out


class DetectionModule:
  """The SavedModel's serving functions for a `RetinaNetModel` (see module docstring).

  Args:
    model: a trained RetinaNetModel (its own detection generator does the NMS).
    batch_size: static batch size of the signatures (None: any).
  """

  def __init__(self, model, batch_size: Optional[int] = None):
    self.model = model
    self.input_size = [int(s) for s in model.input_size]
    self.batch_size = batch_size

  def _preprocess_one(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return preprocess.resize_and_crop_image(image, self.input_size)

  def _detect(self, images: tf.Tensor, image_info: tf.Tensor) -> dict:
    detections = self.model.detect(images)
    detections = {k: detections[k] for k in DETECTION_KEYS}
    detections["detection_boxes"] = boxes_to_image_frame(detections["detection_boxes"],
                                                         image_info)
    return _mask_padding(detections)

  def serve_images(self, images: tf.Tensor) -> dict:
    """uint8 [B, H, W, 3] (any H, W) -> detections in the images' own pixels."""
    images = check_batch(images, "serving_default")
    resized, image_info = tf.map_fn(
        self._preprocess_one, images,
        fn_output_signature=(tf.TensorSpec([*self.input_size, 3], tf.float32),
                             tf.TensorSpec([4, 2], tf.float32)))
    return self._detect(resized, image_info)

  def _decode_one(self, encoded: tf.Tensor, index: tf.Tensor):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    resized, image_info = self._preprocess_one(check_image(image, "serve_encoded: an image"))
    return resized, image_info, index

  def serve_encoded(self, encoded: tf.Tensor) -> dict:
    """string [B] of JPEG/PNG/GIF/BMP/WebP bytes -> detections in each image's own pixels."""
    encoded = _ensure_shape(encoded, [None])
    count = tf.size(encoded)
    check = tf.debugging.assert_positive(count, message="serve_encoded: the batch holds no "
                                         "image")
    with tf.control_dependencies([check]):
      indices = tf.range(count)
    # decode_image's own error does not say which image of the batch failed. Decoding in a
    # tf.data pass that drops failures (ignore_errors) lets check_decoded name the first one.
    size = self.input_size
    start = (tf.zeros([0, *size, 3], tf.float32), tf.zeros([0, 4, 2], tf.float32),
             tf.zeros([0], tf.int32))
    resized, image_info, decoded = (
        tf.data.Dataset.from_tensor_slices((encoded, indices))
        .map(self._decode_one)
        .ignore_errors()
        .reduce(start, lambda acc, x: tuple(tf.concat([a, v[None]], 0)
                                            for a, v in zip(acc, x))))
    decoded = check_decoded(decoded, count, encoded)
    with tf.control_dependencies([decoded]):
      resized = tf.ensure_shape(tf.identity(resized), [None, *size, 3])
      image_info = tf.ensure_shape(tf.identity(image_info), [None, 4, 2])
    return self._detect(resized, image_info)

  def serve_raw(self, images: tf.Tensor) -> dict:
    """float32 [B, h, w, 3] preprocessed images -> raw head outputs (logits, box deltas)."""
    images = _ensure_shape(images, [None, *self.input_size, 3])
    outputs = self.model(images, training=False)
    return {k: outputs[k] for k in RAW_KEYS}

  def signatures(self) -> dict[str, Signature]:
    """Signature name -> (function, input signature), `serving_default` first."""
    b = self.batch_size
    return {
        "serving_default": (self.serve_images,
                            [tf.TensorSpec([b, None, None, 3], tf.uint8, name="images")]),
        "serve_encoded": (self.serve_encoded,
                          [tf.TensorSpec([b], tf.string, name="encoded_images")]),
        "serve_raw": (self.serve_raw,
                      [tf.TensorSpec([b, *self.input_size, 3], tf.float32, name="images")]),
    }


# Name of the TFLite files' detection generator: its tensors are found by this prefix when
# the post-processing must be kept out of int8 quantization.
PADDED_GENERATOR_NAME = "detection_generator_padded"
# Name scope of the TFLite files' flattening of the per-level head outputs, kept out of int8
# quantization too: a concatenation's int8 inputs share one scale, and one scale cannot fit
# both P3's box deltas and P7's (see export_lib._full_int8).
FLAT_OUTPUTS_NAME = "flat_head_outputs"
# What the full-int8 file keeps in float: post-processing, flattening, and the box predictor.
FLOAT_NAMES = (PADDED_GENERATOR_NAME, FLAT_OUTPUTS_NAME, BOX_REGRESSOR_NAME)


def padded_generator(model) -> DetectionGenerator:
  """The model's detection settings with the TFLite-convertible padded NMS (batch 1)."""
  config = {**model.detection_generator.get_config(), "nms": "padded",
            "name": PADDED_GENERATOR_NAME}
  return DetectionGenerator.from_config(config)


def tflite_functions(model, input_dtype: tf.DType = tf.float32) -> dict[str, Signature]:
  """The TFLite file's signatures: fixed [1, H, W, 3] preprocessed input.

  `serving_default` returns detections in model-input pixels (map them back with the
  preprocessing's image_info); `raw` returns the head outputs, for parity checks.

  Args:
    model: a trained RetinaNetModel.
    input_dtype: float32, or uint8 (pixels cast to float inside: the full-int8 file's input,
      so that devices feed camera bytes as they are).
  """
  generator = padded_generator(model)
  anchors = tf.constant(model.anchors, tf.float32)
  spec = [tf.TensorSpec([1, *model.input_size, 3], input_dtype, name="images")]

  def outputs(images):
    # What `model(images)` returns, with the levels flattened and concatenated under
    # FLAT_OUTPUTS_NAME, so that the full-int8 file can keep that step in float.
    cls, box = model.level_outputs(tf.cast(images, tf.float32), training=False)
    with tf.name_scope(FLAT_OUTPUTS_NAME):
      return model.flatten_outputs(cls, box)

  def detect(images):
    out = outputs(images)
    detections = generator(out["cls_outputs"], out["box_outputs"], anchors)
    return {k: detections[k] for k in DETECTION_KEYS}

  def raw(images):
    out = outputs(images)
    return {k: out[k] for k in RAW_KEYS}

  return {"serving_default": (detect, spec), "raw": (raw, spec)}
