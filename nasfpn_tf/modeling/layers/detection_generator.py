"""Post-processing: decode box deltas, keep the best candidates per level, NMS.

Pre-NMS top-k is taken per level on each anchor's best class score, so the
per-class NMS only sees a few thousand candidates instead of every anchor —
this is where Model Garden's CPU inference spends most of its time.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from nasfpn_tf.ops import box_coder


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class DetectionGenerator(keras.layers.Layer):
  """Turns flattened head outputs into a fixed number of detections per image.

  Args:
    level_sizes: number of anchors of each level, in order (to split the flat outputs).
    image_size: (height, width) of the model input; boxes are clipped to it.
    pre_nms_top_k: candidates kept per level before NMS.
    score_threshold: minimum class probability.
    iou_threshold: NMS overlap threshold.
    max_detections: detections returned per image (padded).
    nms: "combined" (`tf.image.combined_non_max_suppression`, batched, for
      Python/SavedModel) or "padded" (batch 1, the best `pre_nms_top_k` (box, class) pairs,
      one greedy NMS over class-shifted boxes: converts to TFLite builtins, same detections).

  Call arguments:
    cls_outputs: [B, N, C] logits; box_outputs: [B, N, 4] deltas; anchors: [N, 4].

  Returns:
    {"detection_boxes": [B, K, 4] (ymin, xmin, ymax, xmax) input pixels,
     "detection_scores": [B, K], "detection_classes": [B, K] int32,
     "num_detections": [B] int32}.
  """

  def __init__(self, level_sizes: Sequence[int], image_size: Sequence[int],
               pre_nms_top_k: int = 5000, score_threshold: float = 0.05,
               iou_threshold: float = 0.5, max_detections: int = 100, nms: str = "combined",
               **kwargs):
    super().__init__(**kwargs)
    if nms not in ("combined", "padded"):
      raise ValueError(f"nms '{nms}' is not 'combined' or 'padded'")
    self.level_sizes = [int(s) for s in level_sizes]
    self.image_size = [int(s) for s in image_size]
    self.pre_nms_top_k = pre_nms_top_k
    self.score_threshold = score_threshold
    self.iou_threshold = iou_threshold
    self.max_detections = max_detections
    self.nms = nms

  def _candidates(self, cls_outputs, box_outputs, anchors):
    """Per level: top-k anchors by best class score -> boxes [B, K, 4], scores [B, K, C]."""
    boxes_all, scores_all = [], []
    start = 0
    for size in self.level_sizes:
      logits = cls_outputs[:, start:start + size]
      deltas = box_outputs[:, start:start + size]
      level_anchors = anchors[start:start + size]
      start += size
      k = min(self.pre_nms_top_k, size)
      best = tf.reduce_max(logits, axis=-1)
      _, idx = tf.math.top_k(best, k=k, sorted=False)
      logits = tf.gather(logits, idx, batch_dims=1)
      # Every anchor is decoded, then the top-k boxes gathered (the same boxes as decoding
      # the gathered deltas), so the anchors feed elementwise ops only: TFLite's
      # dynamic-range quantization turns a large constant that a gather reads into int8,
      # which put the anchors of P3-P5 in steps of 2.2-2.7 pixels (dynamic_int8 lost 0.023
      # AP on the embedded default, 0.0003 with this).
      boxes = box_coder.decode(deltas, level_anchors[None])
      boxes_all.append(tf.gather(boxes, idx, batch_dims=1))
      scores_all.append(tf.sigmoid(logits))
    return tf.concat(boxes_all, 1), tf.concat(scores_all, 1)

  def call(self, cls_outputs, box_outputs, anchors):
    cls_outputs = tf.cast(cls_outputs, tf.float32)
    box_outputs = tf.cast(box_outputs, tf.float32)
    boxes, scores = self._candidates(cls_outputs, box_outputs, tf.cast(anchors, tf.float32))
    scale = tf.constant([self.image_size[0], self.image_size[1]] * 2, tf.float32)
    # Clipped before NMS (as Model Garden does), so overlaps are those of the visible boxes
    # and both NMS variants see the same boxes.
    boxes = tf.clip_by_value(boxes / scale, 0.0, 1.0)
    if self.nms == "combined":
      return self._combined_nms(boxes, scores, scale)
    return self._padded_nms(boxes, scores, scale)

  def _combined_nms(self, boxes, scores, scale):
    nmsed = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=self.max_detections,
        max_total_size=self.max_detections, iou_threshold=self.iou_threshold,
        score_threshold=self.score_threshold, pad_per_class=False, clip_boxes=True)
    return {"detection_boxes": nmsed.nmsed_boxes * scale,
            "detection_scores": nmsed.nmsed_scores,
            "detection_classes": tf.cast(nmsed.nmsed_classes, tf.int32),
            "num_detections": tf.cast(nmsed.valid_detections, tf.int32)}

  def _padded_nms(self, boxes, scores, scale):
    """Batch-1, per-class NMS from TFLite-builtin ops; same detections as `_combined_nms`.

    Every (candidate, class) pair is a candidate of its own, as in combined NMS: an object
    that scores for two classes can be detected as both. The best `pre_nms_top_k` pairs are
    kept (a static size, which TFLite needs), their boxes are shifted by class id so that
    boxes of different classes never overlap, and one greedy NMS runs over them.
    """
    boxes = boxes[0]
    num_classes = int(scores.shape[-1])
    flat_scores = tf.reshape(scores[0], [-1])
    k = min(self.pre_nms_top_k, int(boxes.shape[0]) * num_classes)
    top_scores, pair = tf.math.top_k(flat_scores, k=k, sorted=True)
    classes = pair % num_classes
    top_boxes = tf.gather(boxes, pair // num_classes)
    offsets = tf.cast(classes, tf.float32)[:, None] * 2.0
    # NonMaxSuppressionV4 is the TFLite builtin NON_MAX_SUPPRESSION_V4 (always padded there).
    selected, num = tf.raw_ops.NonMaxSuppressionV4(
        boxes=top_boxes + offsets, scores=top_scores,
        max_output_size=self.max_detections, iou_threshold=self.iou_threshold,
        score_threshold=self.score_threshold, pad_to_max_output_size=True)
    valid = tf.range(self.max_detections) < num
    det_boxes = tf.where(valid[:, None], tf.gather(top_boxes, selected) * scale, 0.0)
    det_scores = tf.where(valid, tf.gather(top_scores, selected), 0.0)
    det_classes = tf.where(valid, tf.gather(classes, selected), 0)
    return {"detection_boxes": det_boxes[None], "detection_scores": det_scores[None],
            "detection_classes": det_classes[None], "num_detections": tf.reshape(num, [1])}

  def get_config(self) -> dict:
    return {**super().get_config(), "level_sizes": self.level_sizes,
            "image_size": self.image_size, "pre_nms_top_k": self.pre_nms_top_k,
            "score_threshold": self.score_threshold, "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections, "nms": self.nms}
