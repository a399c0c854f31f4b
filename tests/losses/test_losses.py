import math

import numpy as np

from nasfpn_tf.losses.focal_loss import sigmoid_focal_loss
from nasfpn_tf.losses.retinanet_loss import retinanet_losses


def _focal_by_hand(z, x, alpha, gamma):
  p = 1 / (1 + math.exp(-x))
  if z:
    return -alpha * (1 - p) ** gamma * math.log(p)
  return -(1 - alpha) * p ** gamma * math.log(1 - p)


def test_focal_known_values():
  logits = np.array([[2.0, -1.0, 0.5]], np.float32)
  labels = np.array([[1.0, 0.0, 0.0]], np.float32)
  got = np.asarray(sigmoid_focal_loss(labels, logits, 0.25, 1.5))
  want = [_focal_by_hand(z, x, 0.25, 1.5) for z, x in zip(labels[0], logits[0])]
  np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_focal_gamma_zero_is_weighted_cross_entropy():
  logits = np.array([[0.3]], np.float32)
  got = float(np.asarray(sigmoid_focal_loss(np.ones_like(logits), logits, 0.25, 0.0))[0, 0])
  np.testing.assert_allclose(got, 0.25 * math.log(1 + math.exp(-0.3)), rtol=1e-5)


def test_retinanet_loss_by_hand():
  # 1 image, 3 anchors, 2 classes: anchor0 positive class 1, anchor1 ignored, anchor2 background.
  cls_targets = np.array([[1, -2, -1]], np.int32)
  box_targets = np.array([[[0.05, 0, 0, 0.3], [9, 9, 9, 9], [9, 9, 9, 9]]], np.float32)
  cls_out = np.array([[[0.0, 1.0], [5.0, 5.0], [-1.0, 2.0]]], np.float32)
  box_out = np.zeros((1, 3, 4), np.float32)
  out = retinanet_losses({"cls_targets": cls_targets, "box_targets": box_targets},
                         cls_out, box_out, num_classes=2, box_loss_weight=50.0)
  focal = (_focal_by_hand(0, 0.0, .25, 1.5) + _focal_by_hand(1, 1.0, .25, 1.5) +
           _focal_by_hand(0, -1.0, .25, 1.5) + _focal_by_hand(0, 2.0, .25, 1.5))
  # Huber(0.1): 0.05 -> 0.5 * 0.05^2; 0.3 -> 0.1 * (0.3 - 0.05); mean over 4 coords.
  huber = (0.5 * 0.05 ** 2 + 0.1 * (0.3 - 0.05)) / 4
  num_pos = 1 + 1
  np.testing.assert_allclose(float(out["cls_loss"]), focal / num_pos, rtol=1e-5)
  np.testing.assert_allclose(float(out["box_loss"]), huber / num_pos, rtol=1e-5)
  np.testing.assert_allclose(float(out["total_loss"]), (focal + 50 * huber) / num_pos, rtol=1e-5)
  assert float(out["num_positives"]) == 1.0


def test_no_positives_is_finite():
  out = retinanet_losses({"cls_targets": np.full((2, 4), -1, np.int32),
                          "box_targets": np.zeros((2, 4, 4), np.float32)},
                         np.zeros((2, 4, 3), np.float32), np.ones((2, 4, 4), np.float32), 3)
  assert np.isfinite(float(out["total_loss"])) and float(out["box_loss"]) == 0.0
