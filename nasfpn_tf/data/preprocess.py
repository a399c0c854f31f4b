"""Preprocessing shared by training, evaluation and the serving export.

Pure TensorFlow ops on one (unbatched) image, usable inside tf.data and inside a SavedModel.
Without scale jitter no random op is created, so the serving graph is deterministic.

Boxes are (ymin, xmin, ymax, xmax) in pixels throughout, as in the raw examples.
`image_info` is float32 [4, 2] = [[orig_h, orig_w], [scaled_h, scaled_w], [scale_y, scale_x],
[offset_y, offset_x]]: a point p of the original image lands at p * scale - offset.

Example:
  image, image_info = resize_and_crop_image(raw["image"], [640, 640], 0.8, 1.2)
  boxes, valid = resize_and_crop_boxes(raw["boxes"], image_info, [640, 640])
  classes = tf.boolean_mask(raw["classes"], valid)
"""

from collections.abc import Sequence

import tensorflow as tf

# The encoded image formats tf.io.decode_image reads, by PIL's name for them, each with the
# (offset, bytes) pairs its files start with. One list for every reader: training checks image
# files against it (coco_reader), serve_encoded checks the bytes it is sent.
IMAGE_FORMATS = {
    "JPEG": ((0, b"\xff\xd8\xff"),),
    "PNG": ((0, b"\x89PNG"),),
    "GIF": ((0, b"GIF8"),),
    "BMP": ((0, b"BM"),),
    "WEBP": ((0, b"RIFF"), (8, b"WEBP")),
}


# Each random op gets its own op seed derived from the caller's seed: two ops with the same op
# seed draw identical numbers, so passing one seed to both functions would correlate the flip
# with the jitter.
_FLIP_SEED_OFFSET, _SCALE_SEED_OFFSET, _CROP_SEED_OFFSET = 0, 1, 2


def _op_seed(seed: int | None, offset: int) -> int | None:
  return None if seed is None else seed + offset


def horizontal_flip(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Mirrors an image left-right and its pixel boxes with it.

  Args:
    image: [H, W, C] image.
    boxes: [n, 4] (ymin, xmin, ymax, xmax) in pixels of `image`.

  Returns:
    (flipped image, flipped boxes); x becomes W - x, so xmin and xmax swap roles.
  """
  width = tf.cast(tf.shape(image)[1], boxes.dtype)
  ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
  flipped_boxes = tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)
  return tf.reverse(image, axis=[1]), flipped_boxes


def random_horizontal_flip(image: tf.Tensor, boxes: tf.Tensor, seed: int | None = None
                           ) -> tuple[tf.Tensor, tf.Tensor]:
  """Flips image and boxes left-right with probability 1/2.

  Args:
    image: [H, W, C] image.
    boxes: [n, 4] (ymin, xmin, ymax, xmax) in pixels of `image`.
    seed: op seed for reproducible flips.

  Returns:
    (image, boxes), both flipped or both untouched.
  """
  do_flip = tf.random.uniform([], seed=_op_seed(seed, _FLIP_SEED_OFFSET)) < 0.5
  return tf.cond(do_flip, lambda: horizontal_flip(image, boxes), lambda: (image, boxes))


def _random_offset(max_offset: tf.Tensor, seed: int | None) -> tf.Tensor:
  """Uniform integer offsets in [0, max_offset] per axis (max_offset >= 0, float [2])."""
  fraction = tf.random.uniform([2], seed=seed)
  return tf.minimum(tf.floor(fraction * (max_offset + 1.0)), max_offset)


def resize_and_crop_image(image: tf.Tensor, output_size: Sequence[int],
                          aug_scale_min: float = 1.0, aug_scale_max: float = 1.0,
                          seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
  """Resizes an image to fit output_size (times a random jitter), crops, pads bottom/right.

  The image keeps its aspect ratio: it is scaled so that it fits in output_size * jitter,
  where jitter ~ U(aug_scale_min, aug_scale_max). If the scaled image is larger than
  output_size a random window of output_size is cropped from it; whatever is smaller is padded
  with zeros at the bottom/right, so the result is exactly output_size.

  Args:
    image: [H, W, 3] image, any real or integer dtype.
    output_size: [out_h, out_w] ints.
    aug_scale_min: smallest jitter factor.
    aug_scale_max: largest jitter factor; min == max == 1 means no randomness at all.
    seed: base op seed for reproducible jitter (seed + 1 for the scale, + 2 for the crop).

  Returns:
    (float32 [out_h, out_w, 3] image in the input's value range (0..255 for uint8),
     float32 [4, 2] image_info, see the module docstring).
  """
  out_h, out_w = int(output_size[0]), int(output_size[1])
  output = tf.constant([out_h, out_w], tf.float32)
  image_size = tf.cast(tf.shape(image)[:2], tf.float32)
  jitter = aug_scale_min != 1.0 or aug_scale_max != 1.0
  target = output
  if jitter:
    target = tf.round(output * tf.random.uniform([], aug_scale_min, aug_scale_max,
                                                 seed=_op_seed(seed, _SCALE_SEED_OFFSET)))
  scale = tf.reduce_min(target / image_size)
  scaled_size = tf.round(image_size * scale)
  image_scale = scaled_size / image_size  # per axis, after rounding to whole pixels
  offset = tf.zeros([2], tf.float32)
  if jitter:
    offset = _random_offset(tf.maximum(scaled_size - output, 0.0),
                            _op_seed(seed, _CROP_SEED_OFFSET))
  resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(scaled_size, tf.int32),
                            method=tf.image.ResizeMethod.BILINEAR)
  top, left = tf.unstack(tf.cast(offset, tf.int32))
  cropped = resized[top:top + out_h, left:left + out_w, :]
  padded = tf.image.pad_to_bounding_box(cropped, 0, 0, out_h, out_w)
  padded = tf.ensure_shape(padded, [out_h, out_w, 3])
  image_info = tf.stack([image_size, scaled_size, image_scale, offset])
  return padded, image_info


def resize_and_crop_boxes(boxes: tf.Tensor, image_info: tf.Tensor, output_size: Sequence[int],
                          min_size: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
  """Applies resize_and_crop_image's geometry to pixel boxes.

  Args:
    boxes: float [n, 4] (ymin, xmin, ymax, xmax) in pixels of the original image.
    image_info: float32 [4, 2] from resize_and_crop_image.
    output_size: [out_h, out_w] used for the image.
    min_size: boxes whose height or width is not above this (in output pixels) are invalid.

  Returns:
    (float32 [n, 4] boxes in output pixels, clipped to the output; bool [n] valid mask, False
     where a box was cropped away or became degenerate).
  """
  boxes = tf.cast(boxes, tf.float32)
  scale = tf.tile(image_info[2], [2])
  offset = tf.tile(image_info[3], [2])
  upper = tf.constant([output_size[0], output_size[1]] * 2, tf.float32)
  boxes = tf.clip_by_value(boxes * scale - offset, 0.0, upper)
  size = boxes[:, 2:] - boxes[:, :2]
  valid = tf.reduce_all(size > min_size, axis=1)
  return boxes, valid
