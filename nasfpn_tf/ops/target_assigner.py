"""IoU-based anchor labelling: which anchor learns which ground-truth box.

Runs inside the tf.data pipeline (as in Model Garden), one image at a time, so
`model.fit` receives ready targets and the model holds no matching logic.

An anchor is positive when its best IoU with a ground-truth box is
>= `positive_threshold`, negative (background) below `negative_threshold`, and
ignored in between. Every ground-truth box also keeps its single best anchor,
even below the threshold, so small or oddly shaped objects are never left
without a positive.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
from keras.utils import bounding_boxes

from nasfpn_tf.ops import box_coder

BACKGROUND = -1
IGNORE = -2


class TargetAssigner:
  """Labels a fixed set of anchors against the boxes of one image.

  Args:
    anchors: [N, 4] (ymin, xmin, ymax, xmax), e.g. `AnchorGenerator.flat(size)`.
    positive_threshold: IoU at or above which an anchor is positive.
    negative_threshold: IoU below which an anchor is background.
    box_weights: box coder weights (None = 1, Model Garden's default).

  Call arguments:
    boxes: float [M, 4] ground truth in the same pixel frame as the anchors.
    classes: int [M] category ids (>= 0).

  Returns:
    cls_targets int32 [N]: class id (positive), -1 (background), -2 (ignored);
    box_targets float32 [N, 4]: encoded deltas (zeros where not positive).
  """

  def __init__(self, anchors: np.ndarray, positive_threshold: float = 0.5,
               negative_threshold: float = 0.5, box_weights: Sequence[float] | None = None):
    self.anchors = tf.constant(anchors, tf.float32)
    self.positive_threshold = positive_threshold
    self.negative_threshold = negative_threshold
    self.box_weights = box_weights

  def __call__(self, boxes: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    return tf.cond(tf.shape(boxes)[0] > 0,
                   lambda: self._assign(boxes, classes),
                   self._all_background)

  def _all_background(self) -> tuple[tf.Tensor, tf.Tensor]:
    n = tf.shape(self.anchors)[0]
    return tf.fill([n], BACKGROUND), tf.zeros([n, 4], tf.float32)

  def _assign(self, boxes: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    iou = bounding_boxes.compute_iou(self.anchors, boxes, bounding_box_format="yxyx")  # [N, M]
    matched_gt = tf.argmax(iou, axis=1, output_type=tf.int32)
    best_iou = tf.reduce_max(iou, axis=1)
    labels = tf.where(best_iou >= self.positive_threshold, 1, 0)
    labels = tf.where(best_iou < self.negative_threshold, -1, labels)
    labels = tf.where((labels == 0), IGNORE, labels)  # between the thresholds

    # Force-match: each box's best anchor becomes positive for that box.
    best_anchor = tf.argmax(iou, axis=0, output_type=tf.int32)  # [M]
    has_overlap = tf.gather_nd(iou, tf.stack([best_anchor, tf.range(tf.shape(boxes)[0])], 1)) > 0
    best_anchor = tf.boolean_mask(best_anchor, has_overlap)
    gt_index = tf.boolean_mask(tf.range(tf.shape(boxes)[0]), has_overlap)
    matched_gt = tf.tensor_scatter_nd_update(matched_gt, best_anchor[:, None], gt_index)
    labels = tf.tensor_scatter_nd_update(labels, best_anchor[:, None],
                                         tf.ones_like(best_anchor))

    positive = labels == 1
    cls_targets = tf.where(positive, tf.gather(classes, matched_gt), labels)
    deltas = box_coder.encode(tf.gather(boxes, matched_gt), self.anchors, self.box_weights)
    box_targets = tf.where(positive[:, None], deltas, 0.0)
    return tf.cast(cls_targets, tf.int32), tf.cast(box_targets, tf.float32)
