"""What a run writes to resume from: the checkpoint, and the step-exact backups.

  AtomicCheckpoint  MODEL_DIR/checkpoint.weights.h5 every `checkpoint_interval` steps and at
                    the end (what `--mode=eval` and a finished run's restart read)
  StepBackup        MODEL_DIR/backup/step-NNNNNNNNN.weights.h5 every `backup_interval` steps,
                    weights and optimizer state, the two newest kept (what a killed run
                    resumes from, mid-epoch included)

Both write through `file_io.atomic_save` (temp name, then rename), ask the
`NonFiniteLossGuard` before every write, and write on the chief only (`enabled`).
"""

from __future__ import annotations

import os
import re
from typing import Optional

import keras
import tensorflow as tf
from absl import logging

from nasfpn_tf import file_io
from nasfpn_tf.training.guard import NonFiniteLossGuard
from nasfpn_tf.training.intervals import EveryNSteps, optimizer_step


class AtomicCheckpoint(EveryNSteps):
  """Saves the weights every `interval` steps and at the end of training, atomically.

  Args:
    path: the `.weights.h5` file.
    interval: steps between saves.
    guard: saving stops once this guard has seen a non-finite loss.
    enabled: False on the non-chief workers of a cluster (the chief writes for everyone).
  """

  def __init__(self, path: str, interval: int, guard: Optional[NonFiniteLossGuard] = None,
               enabled: bool = True):
    super().__init__()
    self.path, self.interval, self.guard, self.enabled = path, interval, guard, enabled
    self.saved_step = -1

  def _on_interval(self, step: int, logs=None) -> None:
    # The guard first, on every worker: stopping must not depend on being the chief.
    if (self.guard and not self.guard.weights_ok(self.model)) or not self.enabled \
        or step == self.saved_step:
      return
    file_io.atomic_save(self.model.save_weights, self.path)
    self.saved_step = step

  def on_train_end(self, logs=None):
    self._on_interval(optimizer_step(self.model))


class StepBackup(EveryNSteps):
  """Backs up weights and optimizer state every `interval` steps, for an exact resume.

  Why not `keras.callbacks.BackupAndRestore`: it writes its file in place (a kill during the
  write loses the backup) and restores only the epoch number, so a run killed mid-epoch
  replays that epoch from its first step and ends with more steps than configured. Here each
  backup is a complete file named after its optimizer step, written under a temporary name and
  renamed; the two newest are kept, so a backup that cannot be read falls back to the one
  before, and `restore` returns the step to resume from.

  Args:
    backup_dir: folder for `step-NNNNNNNNN.weights.h5` files (nothing else goes there).
    interval: steps between backups.
    guard: no backup once this guard has seen a non-finite loss.
    enabled: False on non-chief workers; they restore from the chief's folder (a multi-worker
      model folder must be on storage every worker reads, such as a bucket).
  """

  KEEP = 2
  _NAME = re.compile(r"^step-(\d{9})\.weights\.h5$")

  def __init__(self, backup_dir: str, interval: int,
               guard: Optional[NonFiniteLossGuard] = None, enabled: bool = True):
    super().__init__()
    self.backup_dir, self.interval, self.guard, self.enabled = backup_dir, interval, guard, enabled

  def backups(self) -> list[tuple[int, str]]:
    """(step, path) of the complete backups, newest first."""
    if not tf.io.gfile.isdir(self.backup_dir):
      return []
    found = [(int(m.group(1)), os.path.join(self.backup_dir, name))
             for name in tf.io.gfile.listdir(self.backup_dir)
             if (m := self._NAME.match(name))]
    return sorted(found, reverse=True)

  def restore(self, model: keras.Model) -> int:
    """Loads the newest readable backup into `model` (weights and optimizer); returns its
    step, or 0 when there is none."""
    for step, path in self.backups():
      try:
        model.load_weights(path)
      except (OSError, ValueError) as e:  # truncated by a crash of the storage, say
        logging.warning("Backup %s is unreadable (%s); trying an older one", path, e)
        continue
      return optimizer_step(model)
    return 0

  def _on_interval(self, step: int, logs=None) -> None:
    if (self.guard and not self.guard.weights_ok(self.model)) or not self.enabled:
      return
    file_io.makedirs(self.backup_dir)
    file_io.atomic_save(self.model.save_weights,
                        os.path.join(self.backup_dir, f"step-{step:09d}.weights.h5"))
    for _, old in self.backups()[self.KEEP:]:
      file_io.remove(old)
