"""CocoEvalCallback: COCO AP at the end of every epoch (= every `trainer.validation_interval`
steps), added to the epoch logs and written to MODEL_DIR/eval_results.json."""

from __future__ import annotations

import os
from typing import Optional

import keras
import tensorflow as tf
from pycocotools.coco import COCO

from nasfpn_tf.evaluation.coco_evaluator import evaluate_detections, write_json_atomic
from nasfpn_tf.training.guard import NonFiniteLossGuard


class CocoEvalCallback(keras.callbacks.Callback):
  """Evaluates COCO AP every `every_epochs` epochs; adds `val_AP`... to the logs
  (so TensorBoard and checkpoint callbacks see them) and writes `eval_results.json`.

  With a `guard`, skips the epoch end reached by stopping on a non-finite loss (evaluating
  diverged weights would overwrite the last good eval_results.json).
  """

  def __init__(self, dataset: tf.data.Dataset, coco_gt: COCO, model_dir: str,
               every_epochs: int = 1, max_steps: int = -1,
               guard: Optional[NonFiniteLossGuard] = None):
    super().__init__()
    self.dataset, self.coco_gt, self.model_dir = dataset, coco_gt, model_dir
    self.every_epochs, self.max_steps = every_epochs, max_steps
    self.guard = guard
    self.last_metrics: dict[str, float] = {}

  def on_epoch_end(self, epoch: int, logs: Optional[dict] = None):
    # Runs on the chief only, so it skips but does not stop (the workers would wait for it):
    # the next checkpoint or backup, on every worker, stops training.
    if self.guard is not None and not (self.guard.healthy
                                       and self.guard.weights_finite(self.model)):
      return
    if (epoch + 1) % self.every_epochs:
      return
    self.last_metrics = evaluate_detections(self.model, self.dataset, self.coco_gt,
                                            self.max_steps)
    write_json_atomic(self.last_metrics, os.path.join(self.model_dir, "eval_results.json"))
    if logs is not None:
      logs.update({f"val_{k}": v for k, v in self.last_metrics.items()})
    print(f"\nepoch {epoch + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in self.last_metrics.items()))
