import math

import numpy as np
import pytest

from nasfpn_tf.ops.anchor import AnchorGenerator, anchor_shapes, level_anchors


def test_counts_per_level():
  anchors = AnchorGenerator(3, 7)((256, 128))
  assert list(anchors) == ["P3", "P4", "P5", "P6", "P7"]
  for level, boxes in zip(range(3, 8), anchors.values()):
    assert boxes.shape == ((256 // 2**level) * (128 // 2**level) * 9, 4)


def test_first_anchors_of_p3_by_hand():
  boxes = level_anchors((64, 64), 3, num_scales=3, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=4)
  # Cell (0, 0) is centred at (4, 4); scale 1, ratio 1 is a 32x32 square.
  np.testing.assert_allclose(boxes[1], [4 - 16, 4 - 16, 4 + 16, 4 + 16])
  # Ratio 0.5 (width / height): h = 32 / sqrt(0.5), w = 32 * sqrt(0.5).
  h, w = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
  np.testing.assert_allclose(boxes[0], [4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2], rtol=1e-6)
  # Second scale: 32 * 2**(1/3).
  s = 32 * 2 ** (1 / 3)
  np.testing.assert_allclose(boxes[4], [4 - s / 2, 4 - s / 2, 4 + s / 2, 4 + s / 2], rtol=1e-6)
  # Next cell along x is one stride (8 px) to the right.
  np.testing.assert_allclose(boxes[9 + 1], boxes[1] + [0, 8, 0, 8])


def test_anchor_shapes_area_constant_across_ratios():
  shapes = anchor_shapes(5, 1, (0.5, 1.0, 2.0), 4.0)
  areas = shapes[:, 0] * shapes[:, 1]
  np.testing.assert_allclose(areas, (4 * 32) ** 2, rtol=1e-5)


def test_config_round_trip():
  gen = AnchorGenerator(3, 6, 2, (1.0, 2.0), 3.0)
  again = AnchorGenerator.from_config(gen.get_config())
  np.testing.assert_array_equal(gen.flat((128, 128)), again.flat((128, 128)))
  assert gen.anchors_per_location == 4


def test_bad_levels():
  with pytest.raises(ValueError, match="min_level"):
    AnchorGenerator(5, 3)
