"""StepSummaries: the TensorBoard scalars of a run (MODEL_DIR/logs/train, logs/validation)."""

from __future__ import annotations

import os

import tensorflow as tf

from nasfpn_tf.training.intervals import EveryNSteps, optimizer_step

# Steps between the per-step TensorBoard scalars (loss, learning rate).
SUMMARY_INTERVAL = 50


class StepSummaries(EveryNSteps):
  """TensorBoard scalars, all against the optimizer step, so that every curve shares one x axis.

  `logs/train`: the training logs (loss, cls_loss, ... as Keras averages them over the epoch
  so far) and the learning rate, every `interval` steps and at each epoch end.
  `logs/validation`: the COCO metrics the evaluation adds to the epoch-end logs (`val_AP`
  is written as `AP`), at the step they were measured.

  Why not `keras.callbacks.TensorBoard`: it writes epoch summaries against the epoch number
  (0, 1, 2) and batch summaries against a batch counter that restarts in every `fit` call
  (after a resume, say), so its curves and these would not line up.
  """

  def __init__(self, log_dir: str, interval: int = SUMMARY_INTERVAL):
    super().__init__()
    self.log_dir, self.interval = log_dir, interval
    self._train_writer = self._validation_writer = None
    self._last_written = -1

  def on_train_begin(self, logs=None):
    if self._train_writer is None:
      self._train_writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
      self._validation_writer = tf.summary.create_file_writer(
          os.path.join(self.log_dir, "validation"))
    super().on_train_begin(logs)

  def _on_interval(self, step: int, logs=None) -> None:
    train = {k: v for k, v in (logs or {}).items() if not k.startswith("val_")}
    with self._train_writer.as_default(step=step):
      for name, value in train.items():
        tf.summary.scalar(name, float(value))
      tf.summary.scalar("learning_rate", float(self.model.optimizer.learning_rate))
    self._last_written = step

  def on_epoch_end(self, epoch, logs=None):
    step = optimizer_step(self.model)
    if step != self._last_written:  # the epoch's final averages, unless just written
      self._on_interval(step, logs)
    validation = {k[len("val_"):]: v for k, v in (logs or {}).items() if k.startswith("val_")}
    if validation:
      with self._validation_writer.as_default(step=step):
        for name, value in validation.items():
          tf.summary.scalar(name, float(value))

  def on_train_end(self, logs=None):
    self._train_writer.flush()
    self._validation_writer.flush()
