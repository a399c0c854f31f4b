"""The one-shot reward: AP of one path of a trained supernet, in about a second.

Scoring architecture `spec` with inherited weights:
1. select the path (`NasFpnSupernet.set_architecture`);
2. recalibrate the batch-norm statistics the path depends on (its cells' slots
   and the head's per-level norms) on a few fixed training batches: reset, then
   a cumulative average of the batch statistics. The supernet's running
   statistics mix every path it trained, so they fit none of them (Guo et al.,
   "Single Path One-Shot NAS": without recalibration the ranking is noise);
3. COCO AP of the detections on the held-out split (never `val`).

The backbone and the pyramid's input resampling do not depend on the path, so
their outputs for the calibration and held-out batches are computed once, in
inference mode, and kept; a score only runs the path's cells, the head and the
post-processing. Steps 1-3 are deterministic, so the same spec always gets the
same reward; rewards are also memoised by spec.
"""

from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from nasfpn_tf.architecture_spec import ArchitectureSpec
from nasfpn_tf.evaluation.coco_evaluator import coco_metrics, detections_to_coco


def _batch_norms(layer: keras.layers.Layer) -> list:
  return [l for l in layer._flatten_layers(include_self=False)
          if isinstance(l, keras.layers.BatchNormalization)]


class OneShotReward:
  """spec -> COCO AP of the supernet's path `spec` (a callable reward for `run_search`).

  Args:
    model: a trained `SupernetModel`.
    calibration_images: list of float [B, H, W, 3] training batches (fixed).
    eval_batches: list of (images, image_ids, image_infos) of the held-out split.
    coco_gt: its COCO ground truth.
    metric: which COCO metric is the reward.
  """

  def __init__(self, model: Any, calibration_images: list, eval_batches: list, coco_gt: Any,
               metric: str = "AP"):
    self.model = model
    self.decoder = model.decoder
    self.coco_gt = coco_gt
    self.metric = metric
    self._calibration = [self._inputs(x) for x in calibration_images]
    self._eval = [(self._inputs(x), np.asarray(ids), np.asarray(infos))
                  for x, ids, infos in eval_batches]
    self._head_norms = _batch_norms(model.head)
    # One trace for every path: the path is variables in the supernet.
    self._score_fn = tf.function(self._detect)
    self._calibrate_fn = None
    self.cache: dict[str, float] = {}

  def _inputs(self, images) -> list:
    return self.decoder.input_features(self.model.backbone_features(images, False), False)

  def _detect(self, feats: list) -> dict:
    out = self.model.head_outputs(self.decoder.run_cells(feats, training=False), training=False)
    return self.model.detection_generator(out["cls_outputs"], out["box_outputs"],
                                          self.model.anchors)

  def _calibration_step(self):
    """A traced training-mode pass whose batch norms keep exactly the last batch's statistics.

    Traced once with momentum 0 on every batch norm a path can use (the traced graph keeps
    that value; the layers' own momentum is put back afterwards): running the calibration
    eagerly, where the momentum can change per batch, took 1.1 of the 2.0 s a score cost.
    """
    if self._calibrate_fn is None:
      norms = list(self.decoder.slot_norms.values()) + self._head_norms
      saved = [n.momentum for n in norms]
      feats = self._calibration[0]
      signature = [tf.TensorSpec([None, *f.shape[1:]], f.dtype) for f in feats]
      fn = tf.function(lambda feats: self.model.head_outputs(
          self.decoder.run_cells(feats, training=True), training=True),
          input_signature=[signature])
      try:
        for n in norms:
          n.momentum = 0.0
        self._calibrate_fn = fn.get_concrete_function(signature)
      finally:
        for n, m in zip(norms, saved):
          n.momentum = m
    return self._calibrate_fn

  def recalibrate(self, spec: ArchitectureSpec) -> None:
    """Batch-norm statistics of `spec`'s path and of the head: the mean over the
    calibration batches of each batch's statistics."""
    self.decoder.set_architecture(spec)
    step = self._calibration_step()
    norms = self.decoder.path_norms(spec) + self._head_norms
    means = [np.zeros(n.moving_mean.shape, np.float64) for n in norms]
    variances = [np.zeros(n.moving_variance.shape, np.float64) for n in norms]
    for feats in self._calibration:
      step(feats)
      for n, m, v in zip(norms, means, variances):
        m += np.asarray(n.moving_mean)
        v += np.asarray(n.moving_variance)
    count = len(self._calibration)
    for n, m, v in zip(norms, means, variances):
      n.moving_mean.assign((m / count).astype(np.float32))
      n.moving_variance.assign((v / count).astype(np.float32))

  def evaluate(self, spec: ArchitectureSpec) -> dict[str, float]:
    """Recalibrates `spec`'s path and returns its COCO metrics on the held-out batches."""
    self.recalibrate(spec)
    results, seen = [], []
    for feats, ids, infos in self._eval:
      det = self._score_fn(feats)
      results += detections_to_coco({k: np.asarray(v) for k, v in det.items()}, ids, infos)
      seen += [int(i) for i in ids]
    return coco_metrics(self.coco_gt, results, seen)

  def __call__(self, spec: ArchitectureSpec) -> float:
    key = spec.to_string()
    if key not in self.cache:
      self.cache[key] = float(self.evaluate(spec)[self.metric])
    return self.cache[key]


def cached_batches(dataset, num_batches: Optional[int]) -> list:
  """The first `num_batches` batches (all when None or 0) as a list of tensors."""
  ds = dataset.take(num_batches) if num_batches else dataset
  return list(ds)
