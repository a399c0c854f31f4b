import math

import numpy as np

from nasfpn_tf.ops import box_coder


def test_encode_by_hand():
  anchor = np.array([[0, 0, 32, 32]], np.float32)
  box = np.array([[10, 20, 50, 80]], np.float32)
  deltas = np.asarray(box_coder.encode(box, anchor))
  # centre (30, 50) vs (16, 16); size (40, 60) vs (32, 32).
  np.testing.assert_allclose(deltas[0], [14 / 32, 34 / 32, math.log(40 / 32), math.log(60 / 32)],
                             rtol=1e-5)
  weighted = np.asarray(box_coder.encode(box, anchor, [10, 10, 5, 5]))
  np.testing.assert_allclose(weighted, deltas * [10, 10, 5, 5], rtol=1e-5)


def test_round_trip_random_boxes():
  rng = np.random.default_rng(0)
  anchors = rng.uniform(0, 100, (50, 2)).astype(np.float32)
  anchors = np.concatenate([anchors, anchors + rng.uniform(5, 60, (50, 2))], 1)
  boxes = rng.uniform(0, 100, (50, 2)).astype(np.float32)
  boxes = np.concatenate([boxes, boxes + rng.uniform(5, 60, (50, 2))], 1).astype(np.float32)
  for weights in (None, [10, 10, 5, 5]):
    decoded = np.asarray(box_coder.decode(box_coder.encode(boxes, anchors, weights), anchors,
                                          weights))
    np.testing.assert_allclose(decoded, boxes, atol=1e-3)


def test_decode_clips_huge_size_deltas():
  anchor = np.array([[0, 0, 16, 16]], np.float32)
  decoded = np.asarray(box_coder.decode(np.array([[0, 0, 50, 50]], np.float32), anchor))
  height = decoded[0, 2] - decoded[0, 0]
  assert np.isfinite(decoded).all()
  np.testing.assert_allclose(height, 1000.0, rtol=1e-4)
