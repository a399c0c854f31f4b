"""Training and evaluation with `model.fit`, driven by an `ExperimentConfig`.

One Keras "epoch" is `trainer.validation_interval` steps, so the epoch end is
where COCO evaluation, checkpoints and TensorBoard summaries happen. A killed
run restarted with the same command resumes from the last backup
(`keras.callbacks.BackupAndRestore`), mid-epoch included.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import keras
import tensorflow as tf
from absl import logging

from nasfpn_tf.configs.experiment import ConfigError, DataConfig, ExperimentConfig
from nasfpn_tf.configs.loading import save_yaml
from nasfpn_tf.data.diagnostics import inspect_training_data
from nasfpn_tf.data.coco_reader import SourceInfo
from nasfpn_tf.data.input_pipeline import build_dataset, coco_paths, raw_dataset
from nasfpn_tf.distribute import build_strategy
from nasfpn_tf.evaluation import coco_evaluator
from nasfpn_tf.modeling.factory import build_model
from nasfpn_tf.optimization import build_optimizer

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint.weights.h5"


class AtomicCheckpoint(keras.callbacks.Callback):
  """Saves weights every `interval` steps and at the end, to a temp name then renamed,
  so a kill during the write never corrupts the previous checkpoint."""

  def __init__(self, path: str, interval: int):
    super().__init__()
    self.path, self.interval = path, interval

  def _save(self):
    tmp = self.path.replace(".weights.h5", f".tmp-{os.getpid()}.weights.h5")
    self.model.save_weights(tmp)
    os.replace(tmp, self.path)

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if step % self.interval == 0:
      self._save()

  def on_train_end(self, logs=None):
    self._save()


def save_model_atomic(model: keras.Model, path: str) -> None:
  tmp = path.replace(".keras", f".tmp-{os.getpid()}.keras")
  model.save(tmp)
  os.replace(tmp, path)


def check_num_classes(info: SourceInfo, num_classes: int, split: str) -> None:
  """Label ids must index the class logits: the commonest cause of AP 0 on custom data."""
  if info.num_classes > num_classes:
    raise ConfigError("task.model.num_classes",
                      f"{num_classes} is too small for {split}: its largest category id is "
                      f"{info.num_classes - 1}, so num_classes must be >= {info.num_classes}")


def ground_truth(data: DataConfig, info: SourceInfo):
  """COCO ground truth of an evaluation split: its json when it has one, else built
  from the raw examples (TFDS, TFRecords)."""
  annotation_file, _ = coco_paths(data)
  if annotation_file:
    return coco_evaluator.load_coco_gt(annotation_file)
  raw, _ = raw_dataset(data)
  return coco_evaluator.coco_gt_from_examples(raw.as_numpy_iterator(), info.category_names)


def _callbacks(config: ExperimentConfig, model_dir: str, eval_ds, coco_gt) -> list:
  cbs = [
      keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup"),
                                       save_freq=config.trainer.backup_interval),
      keras.callbacks.TerminateOnNaN(),
      AtomicCheckpoint(os.path.join(model_dir, CHECKPOINT_FILE), config.trainer.checkpoint_interval),
  ]
  if eval_ds is not None:
    cbs.append(coco_evaluator.CocoEvalCallback(eval_ds, coco_gt, model_dir,
                                               max_steps=config.trainer.validation_steps))
  # TensorBoard last, so it also logs the AP the eval callback adds to the epoch logs.
  cbs.append(keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), update_freq=50))
  return cbs


def build_compiled_model(config: ExperimentConfig, strategy: tf.distribute.Strategy):
  sync_bn = config.task.model.norm.sync
  if sync_bn is None:
    sync_bn = strategy.num_replicas_in_sync > 1
  with strategy.scope():
    model = build_model(config.task.model, sync_bn=sync_bn)
    optimizer = build_optimizer(config.trainer, config.task.train_data.global_batch_size,
                                config.task.losses.l2_weight_decay)
    model.compile(optimizer=optimizer, jit_compile=config.runtime.jit_compile,
                  steps_per_execution=config.runtime.steps_per_execution)
  return model


def train_and_evaluate(config: ExperimentConfig, model_dir: str,
                       mode: str = "train_and_eval", verbose: int = 1) -> dict[str, float]:
  """Trains (and evaluates) the experiment; returns the last COCO metrics ({} if none).

  Writes to `model_dir`: config.yaml, TensorBoard logs, checkpoint.weights.h5,
  model.keras (the trained model, for export), eval_results.json.
  """
  if mode not in ("train", "eval", "train_and_eval"):
    raise ValueError(f"mode '{mode}' is not train, eval or train_and_eval")
  os.makedirs(model_dir, exist_ok=True)
  keras.utils.set_random_seed(config.runtime.seed)
  if config.runtime.mixed_precision_dtype != "float32":
    keras.mixed_precision.set_global_policy(f"mixed_{config.runtime.mixed_precision_dtype}")
  strategy = build_strategy(config.runtime)
  save_yaml(config, os.path.join(model_dir, "config.yaml"))

  eval_ds = coco_gt = None
  if mode in ("eval", "train_and_eval"):
    eval_ds, eval_info = build_dataset(config.task.validation_data, config.task.model)
    check_num_classes(eval_info, config.task.model.num_classes, "validation_data")
    coco_gt = ground_truth(config.task.validation_data, eval_info)

  model = build_compiled_model(config, strategy)
  if config.task.init_checkpoint:
    model.load_weights(config.task.init_checkpoint)

  if mode == "eval":
    model.load_weights(os.path.join(model_dir, CHECKPOINT_FILE))
    return _evaluate(model, eval_ds, coco_gt, model_dir, config)

  train_ds, train_info = build_dataset(config.task.train_data, config.task.model)
  check_num_classes(train_info, config.task.model.num_classes, "train_data")
  report = inspect_training_data(train_ds, config.task.model)
  if verbose:
    print(f"Training data: {report.summary()}")
  steps_per_epoch = min(config.trainer.validation_interval, config.trainer.train_steps)
  epochs = math.ceil(config.trainer.train_steps / steps_per_epoch)
  callbacks = _callbacks(config, model_dir, eval_ds, coco_gt)
  model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
            verbose=verbose)
  save_model_atomic(model, os.path.join(model_dir, MODEL_FILE))
  eval_cb = [c for c in callbacks if isinstance(c, coco_evaluator.CocoEvalCallback)]
  return eval_cb[0].last_metrics if eval_cb else {}


def _evaluate(model, eval_ds, coco_gt, model_dir: str, config: ExperimentConfig) -> dict:
  metrics = coco_evaluator.evaluate_detections(model, eval_ds, coco_gt,
                                               config.trainer.validation_steps)
  coco_evaluator.write_json_atomic(metrics, os.path.join(model_dir, "eval_results.json"))
  return metrics
