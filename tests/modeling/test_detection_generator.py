import numpy as np

from nasfpn_tf.modeling.layers.detection_generator import DetectionGenerator
from nasfpn_tf.ops.anchor import AnchorGenerator


def _setup(nms):
  gen = AnchorGenerator(3, 4, num_scales=1, aspect_ratios=(1.0,), anchor_size=4)
  anchors = gen((64, 64))
  flat = np.concatenate(list(anchors.values()))
  det = DetectionGenerator([len(a) for a in anchors.values()], (64, 64), pre_nms_top_k=10,
                           score_threshold=0.3, iou_threshold=0.5, max_detections=5, nms=nms)
  n = len(flat)
  cls = np.full((1, n, 3), -10.0, np.float32)
  # Two overlapping anchors of class 2 (NMS keeps the higher), one of class 1 elsewhere.
  cls[0, 0, 2], cls[0, 1, 2], cls[0, 20, 1] = 3.0, 2.0, 1.0
  box = np.zeros((1, n, 4), np.float32)
  return det, cls, box, flat


def test_output_format_and_nms():
  for nms in ("combined", "padded"):
    det, cls, box, anchors = _setup(nms)
    out = {k: np.asarray(v) for k, v in det(cls, box, anchors).items()}
    assert out["detection_boxes"].shape == (1, 5, 4)
    assert out["detection_scores"].shape == (1, 5)
    assert out["detection_classes"].dtype == np.int32
    assert int(out["num_detections"][0]) == 2, nms
    np.testing.assert_allclose(out["detection_scores"][0, :2], [1 / (1 + np.exp(-3)),
                                                                1 / (1 + np.exp(-1))], rtol=1e-5)
    np.testing.assert_array_equal(out["detection_classes"][0, :2], [2, 1])
    # Zero deltas decode to the anchor itself, clipped to the 64x64 image.
    np.testing.assert_allclose(out["detection_boxes"][0, 0], np.clip(anchors[0], 0, 64), atol=1e-4)


def test_config_round_trip():
  det, *_ = _setup("padded")
  again = DetectionGenerator.from_config(det.get_config())
  assert again.get_config() == det.get_config()
