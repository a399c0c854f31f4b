"""Checks that fail before anything is written, each naming the config key at fault."""

from __future__ import annotations

import tensorflow as tf

from nasfpn_tf import checkpoint_import
from nasfpn_tf.configs.experiment import ConfigError, DataConfig, ExperimentConfig
from nasfpn_tf.data.coco_reader import SourceInfo


def check_num_classes(info: SourceInfo, num_classes: int, split: str) -> None:
  """Label ids must index the class logits: the commonest cause of AP 0 on custom data."""
  if info.num_classes > num_classes:
    raise ConfigError("task.model.num_classes",
                      f"{num_classes} is too small for {split}: its largest category id is "
                      f"{info.num_classes - 1}, so num_classes must be >= {info.num_classes}")


def check_intervals(config: ExperimentConfig) -> None:
  """Steps Keras runs per call (`steps_per_execution`) must divide every interval: callbacks
  only see every k-th step, and an epoch would otherwise overrun its end."""
  k = config.runtime.steps_per_execution
  t = config.trainer
  for key, value in (("train_steps", t.train_steps),
                     ("validation_interval", min(t.validation_interval, t.train_steps)),
                     ("checkpoint_interval", t.checkpoint_interval),
                     ("backup_interval", t.backup_interval)):
    if value % k:
      raise ConfigError(f"trainer.{key}", f"{value} is not a multiple of "
                        f"runtime.steps_per_execution = {k}")


def check_init_checkpoint(config: ExperimentConfig) -> None:
  """A missing or wrong `task.init_checkpoint` (a Keras file or a TensorFlow checkpoint
  prefix) fails before anything is written, naming the key."""
  path = config.task.init_checkpoint
  if not path:
    return
  try:
    checkpoint_import.preflight(path, config.task.init_checkpoint_modules)
  except checkpoint_import.CheckpointImportError as e:
    raise ConfigError("task.init_checkpoint", str(e)) from None


def check_batch(data: DataConfig, strategy: tf.distribute.Strategy, key: str) -> None:
  replicas = strategy.num_replicas_in_sync
  if data.global_batch_size % replicas:
    raise ConfigError(f"task.{key}.global_batch_size", f"{data.global_batch_size} does not "
                      f"split evenly over {replicas} replicas")
