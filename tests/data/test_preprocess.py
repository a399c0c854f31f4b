"""Golden tests for the shared preprocessing (resize/crop/pad, boxes, flips)."""

import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf.data import preprocess


def _rectangle_image(height, width, box):
  """Black image with a white filled rectangle over pixel-edge box (ymin, xmin, ymax, xmax)."""
  pixels = np.zeros((height, width, 3), np.uint8)
  ymin, xmin, ymax, xmax = box
  pixels[ymin:ymax, xmin:xmax] = 255
  return tf.constant(pixels)


def _nonzero_extent(image, threshold=127.5):
  """(ymin, xmin, ymax, xmax) pixel-edge extent of pixels brighter than threshold, or None."""
  mask = np.asarray(image)[..., 0] > threshold
  if not mask.any():
    return None
  rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


def test_resize_without_jitter_golden():
  image = tf.fill([100, 200, 3], tf.constant(7, tf.uint8))
  out, info = preprocess.resize_and_crop_image(image, [64, 64])
  # Fits 200 wide into 64: scale 0.32, scaled size 32 x 64, padded below.
  np.testing.assert_allclose(info, [[100, 200], [32, 64], [0.32, 0.32], [0, 0]], rtol=1e-6)
  assert out.dtype == tf.float32 and out.shape == (64, 64, 3)
  np.testing.assert_allclose(out[:32], 7.0)
  np.testing.assert_allclose(out[32:], 0.0)
  boxes, valid = preprocess.resize_and_crop_boxes(
      tf.constant([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 100.0, 200.0]]), info, [64, 64])
  np.testing.assert_allclose(boxes, [[3.2, 6.4, 16.0, 32.0], [0.0, 0.0, 32.0, 64.0]], rtol=1e-6)
  np.testing.assert_array_equal(valid, [True, True])


def test_rounding_gives_per_axis_scales():
  image = tf.zeros([33, 50, 3], tf.uint8)
  _, info = preprocess.resize_and_crop_image(image, [40, 40])
  # scale = min(40/33, 40/50) = 0.8; 33 * 0.8 = 26.4 rounds to 26, so scale_y = 26/33.
  np.testing.assert_allclose(info, [[33, 50], [26, 40], [26 / 33, 0.8], [0, 0]], rtol=1e-6)
  boxes, _ = preprocess.resize_and_crop_boxes(tf.constant([[33.0, 10.0, 33.0, 50.0]]), info,
                                              [40, 40])
  np.testing.assert_allclose(boxes, [[26.0, 8.0, 26.0, 40.0]], rtol=1e-6)


def test_boxes_are_offset_clipped_and_marked():
  # Scale 2, crop window starting at (y=10, x=20), 32 x 32 output.
  info = tf.constant([[50, 50], [100, 100], [2, 2], [10, 20]], tf.float32)
  boxes = tf.constant([
      [10.0, 15.0, 20.0, 25.0],  # -> [10, 10, 30, 30]: inside
      [0.0, 0.0, 8.0, 12.0],     # -> [-10, -20, 6, 4] -> clipped to [0, 0, 6, 4]
      [0.0, 0.0, 4.0, 4.0],      # -> [-10, -20, -2, -12]: cropped away
      [30.0, 30.0, 30.0, 40.0],  # zero height
  ])
  out, valid = preprocess.resize_and_crop_boxes(boxes, info, [32, 32])
  np.testing.assert_allclose(out[:2], [[10, 10, 30, 30], [0, 0, 6, 4]])
  np.testing.assert_array_equal(valid, [True, True, False, False])
  _, valid = preprocess.resize_and_crop_boxes(boxes, info, [32, 32], min_size=5.0)
  np.testing.assert_array_equal(valid, [True, False, False, False])


def test_flip_golden_and_twice_is_identity():
  image = tf.constant(np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3))
  boxes = tf.constant([[0.0, 2.0, 1.0, 5.0], [0.5, 0.0, 2.0, 10.0]])
  flipped_image, flipped_boxes = preprocess.horizontal_flip(image, boxes)
  np.testing.assert_allclose(flipped_boxes, [[0, 5, 1, 8], [0.5, 0, 2, 10]])
  np.testing.assert_array_equal(flipped_image[:, 0], image[:, 9])
  again_image, again_boxes = preprocess.horizontal_flip(flipped_image, flipped_boxes)
  np.testing.assert_array_equal(again_image, image)
  np.testing.assert_allclose(again_boxes, boxes)


def test_random_flip_moves_boxes_with_the_pixels():
  box = (5, 3, 15, 9)
  image = _rectangle_image(20, 30, box)
  tf.random.set_seed(0)
  seen = set()
  for _ in range(16):
    out_image, out_boxes = preprocess.random_horizontal_flip(
        image, tf.constant([box], tf.float32))
    np.testing.assert_allclose(out_boxes[0], _nonzero_extent(out_image))
    seen.add(float(out_boxes[0, 1]))
  assert seen == {3.0, 21.0}  # both outcomes happen


@pytest.mark.parametrize("seed", range(12))
def test_jittered_boxes_cover_the_same_pixels(seed):
  box = (30, 40, 70, 110)
  image = _rectangle_image(120, 160, box)
  tf.random.set_seed(seed)
  out, info = preprocess.resize_and_crop_image(image, [96, 96], aug_scale_min=0.5,
                                               aug_scale_max=2.0, seed=seed)
  boxes, valid = preprocess.resize_and_crop_boxes(tf.constant([box], tf.float32), info,
                                                  [96, 96])
  extent = _nonzero_extent(out)
  if not bool(valid[0]):
    assert extent is None  # the rectangle was cropped away entirely
    return
  np.testing.assert_allclose(boxes[0], extent, atol=1.0)


def test_jitter_range_and_crop_offsets():
  image = tf.zeros([100, 100, 3], tf.uint8)
  tf.random.set_seed(1)
  scales, offsets = [], []
  for _ in range(30):
    out, info = preprocess.resize_and_crop_image(image, [64, 64], 0.5, 2.0)
    assert out.shape == (64, 64, 3)
    scales.append(float(info[2, 0]))
    offsets.append(info[3].numpy())
    max_offset = np.maximum(info[1].numpy() - 64, 0)
    assert np.all(info[3].numpy() >= 0) and np.all(info[3].numpy() <= max_offset)
  assert 0.32 - 1e-6 <= min(scales) and max(scales) <= 1.28 + 1e-6
  assert min(scales) < 0.64 < max(scales)  # both shrinking and enlarging happen
  assert any(o.any() for o in offsets)


def test_serving_graph_has_static_shape_and_no_random_ops():
  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def serve(image):
    return preprocess.resize_and_crop_image(image, [64, 48])

  concrete = serve.get_concrete_function()
  assert concrete.structured_outputs[0].shape == (64, 48, 3)
  op_types = {op.type for op in concrete.graph.get_operations()}
  assert not any("Random" in t for t in op_types)
  out, info = serve(tf.zeros([30, 90, 3], tf.uint8))
  np.testing.assert_allclose(info, [[30, 90], [16, 48], [16 / 30, 48 / 90], [0, 0]], rtol=1e-6)


def test_works_inside_tf_data():
  dataset = tf.data.Dataset.from_tensors(
      {"image": tf.zeros([50, 70, 3], tf.uint8), "boxes": tf.constant([[1.0, 2.0, 30.0, 40.0]])})

  def transform(example):
    image, boxes = preprocess.random_horizontal_flip(example["image"], example["boxes"], seed=1)
    image, info = preprocess.resize_and_crop_image(image, [32, 32], 0.8, 1.2, seed=2)
    boxes, valid = preprocess.resize_and_crop_boxes(boxes, info, [32, 32])
    return image, info, boxes, valid

  image, info, boxes, valid = next(iter(dataset.map(transform)))
  assert image.shape == (32, 32, 3) and info.shape == (4, 2) and boxes.shape == (1, 4)
  assert valid.dtype == tf.bool
