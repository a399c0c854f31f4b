"""Training and evaluation with `model.fit`, driven by an `ExperimentConfig`, on any strategy.

One Keras "epoch" is `trainer.validation_interval` steps, so the epoch end is where COCO
evaluation and epoch summaries happen. Every strategy (one device, mirrored GPUs, multi-worker,
TPU) trains through the same `model.fit` call; `distribute.py` says which input path each takes.

Fault tolerance: every `trainer.backup_interval` steps the chief writes the weights and the
optimizer state (its step counter included) to `model_dir/backup/` atomically. A killed run
restarted with the same command restores the newest readable backup and resumes at exactly that
step, mid-epoch included, and stops at `trainer.train_steps`; a run killed after training
finished (during the evaluation or export) trains nothing when restarted and goes on with
what is left. Files are written through `file_io` (temp name, then rename), and the temp
files of a killed run are removed when the next one starts. A non-finite loss stops training
before anything is written from the broken weights: the last checkpoint and backups stay the
last good ones, and `TrainingDivergedError` says where they are.

Run (see run.py for the flags):
  python run.py --config_file=configs/retinanet_r50_nasfpn_640_coco.yaml --model_dir=runs/coco
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from nasfpn_tf import checkpoint_import, distribute, file_io, precision
from nasfpn_tf.configs.experiment import ConfigError, DataConfig, ExperimentConfig
from nasfpn_tf.configs.loading import save_yaml
from nasfpn_tf.data.coco_reader import SourceInfo
from nasfpn_tf.data.diagnostics import inspect_training_data
from nasfpn_tf.data.input_pipeline import build_dataset, coco_paths, raw_dataset
from nasfpn_tf.evaluation import coco_evaluator
from nasfpn_tf.modeling.factory import build_model
from nasfpn_tf.optimization import build_optimizer, decay_in_loss

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint.weights.h5"
BACKUP_DIR = "backup"
# Steps between the per-step TensorBoard scalars (loss, learning rate).
SUMMARY_INTERVAL = 50


class TrainingDivergedError(FloatingPointError):
  """The loss became NaN or infinite; nothing was saved from the diverged weights."""


# ----------------------------------------------------------------------------- callbacks

def _step(model: keras.Model) -> int:
  return int(model.optimizer.iterations.numpy())


def _crossed(previous: int, current: int, interval: int) -> bool:
  """Whether a multiple of `interval` lies in (previous, current]: with several steps per
  execution, callbacks see every k-th step only."""
  return current // interval > previous // interval


class NonFiniteLossGuard(keras.callbacks.Callback):
  """Stops training at the first NaN/inf loss and remembers where, so that the callbacks after
  it (checkpoint, backup, evaluation) can refuse to save the broken weights.

  Keras' TerminateOnNaN stops as well, but `on_train_end` callbacks would still run on the
  diverged weights and overwrite the last good checkpoint. Put this callback first.

  A step's loss is computed before its update, so the update of the last step with a finite
  loss can itself leave non-finite weights: the savers call `weights_ok` before writing, on
  every worker (the weights are the same everywhere, so all workers stop at the same step).
  """

  def __init__(self):
    super().__init__()
    self.bad_step: Optional[int] = None
    self.bad_loss: Optional[float] = None
    self.reason = ""

  @property
  def healthy(self) -> bool:
    return self.bad_step is None

  def _stop(self, step: int, loss: float, reason: str) -> None:
    self.bad_step, self.bad_loss, self.reason = step, loss, reason
    logging.error("%s at step %d: stopping, nothing is saved from here", reason, step)
    self.model.stop_training = True

  @staticmethod
  def weights_finite(model: keras.Model) -> bool:
    return all(np.isfinite(np.asarray(w)).all() for w in model.weights)

  def weights_ok(self, model: keras.Model) -> bool:
    """Whether training is healthy and `model`'s weights are all finite (else it stops)."""
    if self.healthy and not self.weights_finite(model):
      self.set_model(model)
      self._stop(_step(model), float("nan"), "the weights became non-finite")
    return self.healthy

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is None or not self.healthy:
      return
    loss = float(loss)
    if not math.isfinite(loss):
      self._stop(_step(self.model), loss, f"loss {loss}")


class _EveryNSteps(keras.callbacks.Callback):
  """Calls `self._on_interval(step, logs)` whenever the optimizer step crosses a multiple of
  `self.interval` (steps_per_execution may jump over the multiple itself)."""

  def on_train_begin(self, logs=None):
    self._last_step = _step(self.model)

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if _crossed(self._last_step, step, self.interval):
      self._on_interval(step, logs)
    self._last_step = step


class AtomicCheckpoint(_EveryNSteps):
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
    self._on_interval(_step(self.model))


class StepBackup(_EveryNSteps):
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
      return _step(model)
    return 0

  def _on_interval(self, step: int, logs=None) -> None:
    if (self.guard and not self.guard.weights_ok(self.model)) or not self.enabled:
      return
    file_io.makedirs(self.backup_dir)
    file_io.atomic_save(self.model.save_weights,
                        os.path.join(self.backup_dir, f"step-{step:09d}.weights.h5"))
    for _, old in self.backups()[self.KEEP:]:
      file_io.remove(old)


class StepSummaries(_EveryNSteps):
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
    step = _step(self.model)
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


class GuardedCocoEval(coco_evaluator.CocoEvalCallback):
  """COCO evaluation that skips the epoch end reached by stopping on a non-finite loss
  (evaluating diverged weights would overwrite the last good eval_results.json)."""

  def __init__(self, *args, guard: NonFiniteLossGuard, **kwargs):
    super().__init__(*args, **kwargs)
    self.guard = guard

  def on_epoch_end(self, epoch, logs=None):
    # Runs on the chief only, so it skips but does not stop (the workers would wait for it):
    # the next checkpoint or backup, on every worker, stops training.
    if self.guard.healthy and self.guard.weights_finite(self.model):
      super().on_epoch_end(epoch, logs)


# ----------------------------------------------------------------------------- checks

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


def fit_plan(done: int, total: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
  """The `model.fit` calls that take training from step `done` to step `total`.

  Epoch e covers steps [e * steps_per_epoch, (e + 1) * steps_per_epoch). A run resumed
  mid-epoch first finishes that epoch alone, and a `total` that is not a whole number of
  epochs ends with a short epoch, so evaluation still happens at every epoch boundary.

  Returns:
    (initial_epoch, epochs, steps_per_epoch) for each fit call, in order.
  """
  plan = []
  if done % steps_per_epoch and done < total:
    epoch = done // steps_per_epoch
    end = min((epoch + 1) * steps_per_epoch, total)
    plan.append((epoch, epoch + 1, end - done))
    done = end
  full_epochs = total // steps_per_epoch
  if done < full_epochs * steps_per_epoch:
    plan.append((done // steps_per_epoch, full_epochs, steps_per_epoch))
    done = full_epochs * steps_per_epoch
  if done < total:
    plan.append((full_epochs, full_epochs + 1, total - done))
  return plan


# ----------------------------------------------------------------------------- setup

def set_precision_policy(config: ExperimentConfig, strategy: tf.distribute.Strategy) -> str:
  """Sets Keras' global dtype policy from `runtime.mixed_precision_dtype` (see precision.py)."""
  try:
    return precision.set_policy(config.runtime.mixed_precision_dtype, strategy)
  except precision.PrecisionError as e:
    raise ConfigError("runtime.mixed_precision_dtype", str(e)) from None


def build_compiled_model(config: ExperimentConfig, strategy: tf.distribute.Strategy):
  """Model, optimizer (built, so a backup can be loaded into it) and compile, in scope."""
  sync_bn = config.task.model.norm.sync
  if sync_bn is None:
    sync_bn = strategy.num_replicas_in_sync > 1
  with strategy.scope():
    model = build_model(config.task.model, sync_bn=sync_bn)
    if decay_in_loss(config.trainer):
      model.l2_weight_decay = config.task.losses.l2_weight_decay
    optimizer = build_optimizer(config.trainer, config.task.train_data.global_batch_size,
                                config.task.losses.l2_weight_decay)
    model.compile(optimizer=optimizer, jit_compile=config.runtime.jit_compile,
                  steps_per_execution=config.runtime.steps_per_execution)
    model.optimizer.build(model.trainable_variables)
  return model


def load_init_checkpoint(model: keras.Model, path: str) -> None:
  """Loads the model weights of `path` (`.weights.h5` or `.keras`) as a starting point.

  The optimizer keeps its fresh state: a checkpoint of another run also holds its optimizer
  step and momenta, which would shift this run's schedule and end it past train_steps. (Model
  Garden's init_checkpoint restores no optimizer either.)
  """
  fresh = [v.numpy() for v in model.optimizer.variables]
  model.load_weights(path)
  for variable, value in zip(model.optimizer.variables, fresh):
    variable.assign(value)


def ground_truth(data: DataConfig, info: SourceInfo):
  """COCO ground truth of an evaluation split: its json when it has one, else built
  from the raw examples (TFDS, TFRecords)."""
  annotation_file, _ = coco_paths(data)
  if annotation_file:
    return coco_evaluator.load_coco_gt(annotation_file)
  raw, _ = raw_dataset(data)
  return coco_evaluator.coco_gt_from_examples(raw.as_numpy_iterator(), info.category_names)


@dataclasses.dataclass
class _Run:
  """What one training process needs to know about its place in the job."""
  config: ExperimentConfig
  model_dir: str
  strategy: tf.distribute.Strategy
  chief: bool
  verbose: int


def _setup(config: ExperimentConfig, model_dir: str, verbose: int) -> _Run:
  """Checks and the strategy; writes nothing (see `_write_config`)."""
  check_intervals(config)
  check_init_checkpoint(config)
  keras.utils.set_random_seed(config.runtime.seed)
  strategy = distribute.build_strategy(config.runtime)
  set_precision_policy(config, strategy)
  check_batch(config.task.train_data, strategy, "train_data")
  chief = distribute.is_chief(strategy)
  # Only the chief prints progress: the workers' bars would say the same, interleaved.
  return _Run(config, model_dir, strategy, chief, verbose if chief else 0)


def _write_config(run: _Run) -> None:
  """The first write into MODEL_DIR: called once the inputs were read and found usable, so
  that a bad input leaves the folder as it was."""
  if run.chief:
    file_io.makedirs(run.model_dir)
    # What a killed run was writing (checkpoint, model.keras, a backup) under a temp name.
    for path in file_io.clean_stale_temp_files(run.model_dir,
                                               os.path.join(run.model_dir, BACKUP_DIR)):
      logging.info("Removed %s, left by a killed run", path)
    save_yaml(run.config, os.path.join(run.model_dir, "config.yaml"))


def _eval_input(run: _Run):
  """(dataset, COCO ground truth) of the validation split."""
  data = run.config.task.validation_data
  eval_ds, info = build_dataset(data, run.config.task.model)
  check_num_classes(info, run.config.task.model.num_classes, "validation_data")
  return eval_ds, ground_truth(data, info)


def _train_input(run: _Run):
  """The training input for `fit`, after the data checks on this worker's local pipeline."""
  data, model_config = run.config.task.train_data, run.config.task.model
  local_ds, info = build_dataset(data, model_config)
  check_num_classes(info, model_config.num_classes, "train_data")
  report = inspect_training_data(local_ds, model_config, total_images=info.num_images)
  if run.verbose:
    print(f"Training data: {report.summary()}")
  if not distribute.uses_per_worker_datasets(run.strategy):
    return local_ds
  return distribute.distribute_dataset(
      run.strategy, lambda ctx: build_dataset(data, model_config, ctx)[0])


# ----------------------------------------------------------------------------- training

@dataclasses.dataclass
class TrainResult:
  """What `train` did.

  Attributes:
    model: the trained model (its variables belong to the run's strategy).
    history: per-epoch logs over all fit calls of this process (`loss`, `cls_loss`, ...).
    steps: the optimizer step at the end (== trainer.train_steps).
    resumed_from: the step restored from a backup (0: started fresh).
    eval_metrics: the COCO metrics of the last evaluation in this process ({}: none).
    already_trained: training had finished in an earlier process (model.keras and the
      checkpoint at train_steps were there): nothing was trained or saved.
  """
  model: keras.Model
  history: dict[str, list[float]]
  steps: int
  resumed_from: int
  eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  already_trained: bool = False


def _callbacks(run: _Run, guard: NonFiniteLossGuard, backup: StepBackup,
               eval_input, extra: Sequence[keras.callbacks.Callback] = ()
               ) -> list[keras.callbacks.Callback]:
  t = run.config.trainer
  cbs = [guard,  # first: the savers below look at its verdict for the same step
         AtomicCheckpoint(os.path.join(run.model_dir, CHECKPOINT_FILE), t.checkpoint_interval,
                          guard, enabled=run.chief),
         backup]
  if eval_input is not None:
    cbs.append(GuardedCocoEval(*eval_input, run.model_dir, max_steps=t.validation_steps,
                               guard=guard))
  if run.chief:
    # Last, so that its epoch summaries include the AP the evaluation adds to the logs.
    cbs.append(StepSummaries(os.path.join(run.model_dir, "logs")))
  # The caller's (e.g. a search reporting each evaluation) see the AP in the epoch logs.
  return cbs + list(extra)


def _restore_finished(run: _Run, model: keras.Model) -> bool:
  """Loads the checkpoint of a training that finished in this folder, if there is one.

  Finished means: model.keras was written (that happens only after the last step) and the
  checkpoint's optimizer step is trainer.train_steps. A run killed after that (during the
  evaluation or the export) then goes straight to what is left instead of training again.
  Anything else (no model.keras, a checkpoint of another length) leaves `model` as it was.
  """
  checkpoint = os.path.join(run.model_dir, CHECKPOINT_FILE)
  if not (file_io.exists(os.path.join(run.model_dir, MODEL_FILE))
          and file_io.exists(checkpoint)):
    return False
  variables = list(model.weights) + list(model.optimizer.variables)
  before = [v.numpy() for v in variables]
  try:
    model.load_weights(checkpoint)
  except (OSError, ValueError) as e:  # another architecture's checkpoint, say
    logging.warning("Not resuming from %s (%s)", checkpoint, e)
    step = -1
  else:
    step = _step(model)
  if step == run.config.trainer.train_steps:
    return True
  for v, value in zip(variables, before):
    v.assign(value)
  return False


def _fit(run: _Run, model: keras.Model, train_ds, eval_input=None,
         extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
  """Restores the newest backup, then runs the fit calls of `fit_plan` to train_steps."""
  t = run.config.trainer
  guard = NonFiniteLossGuard()
  backup = StepBackup(os.path.join(run.model_dir, BACKUP_DIR), t.backup_interval, guard,
                      enabled=run.chief)
  done = backup.restore(model)
  if done and run.verbose:
    print(f"Resuming from the backup at step {done} of {t.train_steps}")
  if not done and _restore_finished(run, model):
    if run.verbose:
      print(f"Training finished earlier in {run.model_dir} (step {t.train_steps}): "
            "going on with what is left")
    return TrainResult(model, {}, t.train_steps, t.train_steps, already_trained=True)
  callbacks = _callbacks(run, guard, backup, eval_input, extra_callbacks)
  history: dict[str, list[float]] = {}
  steps_per_epoch = min(t.validation_interval, t.train_steps)
  for initial_epoch, epochs, steps in fit_plan(done, t.train_steps, steps_per_epoch):
    # The input pipeline shuffles; Keras' own shuffle applies to arrays only.
    h = model.fit(train_ds, initial_epoch=initial_epoch, epochs=epochs, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=run.verbose, shuffle=False)
    for key, values in h.history.items():
      history.setdefault(key, []).extend(float(v) for v in values)
    if not guard.healthy:
      raise TrainingDivergedError(
          f"{guard.reason} at step {guard.bad_step}; nothing was saved after the "
          f"last good step. Last checkpoint: {os.path.join(run.model_dir, CHECKPOINT_FILE)}; "
          f"backups: {[p for _, p in backup.backups()]} (rerunning resumes from the newest: "
          "lower trainer.learning_rate.base_lr or add trainer.optimizer.clipnorm first)")
  evals = [c for c in callbacks if isinstance(c, GuardedCocoEval)]
  return TrainResult(model, history, _step(model), done,
                     evals[0].last_metrics if evals else {})


def _finish(run: _Run, result: TrainResult) -> None:
  """Chief: the final model file, then (only then) the backups go, as Keras' own
  BackupAndRestore does. A later run in this folder with the same train_steps finds the
  training finished (`_restore_finished`); with other train_steps it starts afresh."""
  if not run.chief or result.already_trained:
    return
  file_io.atomic_save(result.model.save, os.path.join(run.model_dir, MODEL_FILE))
  file_io.remove(os.path.join(run.model_dir, BACKUP_DIR))


def _init_from_checkpoint(model, config: ExperimentConfig, verbose: int) -> None:
  path = config.task.init_checkpoint
  if not path:
    return
  if path.endswith((".weights.h5", ".keras")):
    load_init_checkpoint(model, path)   # weights only: the optimizer starts fresh
  else:
    checkpoint_import.initialize(model, path, config.task.init_checkpoint_modules, verbose)


def train(config: ExperimentConfig, model_dir: str, verbose: int = 1) -> TrainResult:
  """Trains the experiment without COCO evaluation, resuming from a backup if there is one.

  Writes (chief only) config.yaml, checkpoint.weights.h5, model.keras and TensorBoard logs.
  """
  run = _setup(config, model_dir, verbose)
  train_ds = _train_input(run)
  _write_config(run)
  model = build_compiled_model(config, run.strategy)
  _init_from_checkpoint(model, config, run.verbose)
  result = _fit(run, model, train_ds)
  _finish(run, result)
  return result


def train_and_evaluate(config: ExperimentConfig, model_dir: str,
                       mode: str = "train_and_eval", verbose: int = 1,
                       callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, float]:
  """Trains (and evaluates) the experiment; returns the last COCO metrics ({} if none).

  `callbacks` are added to Keras' (after the evaluation, so they see `val_AP`...).

  Writes to `model_dir` (chief only): config.yaml, TensorBoard logs, checkpoint.weights.h5,
  model.keras (the trained model, for export), eval_results.json, backup/ while training.
  """
  if mode not in ("train", "eval", "train_and_eval"):
    raise ValueError(f"mode '{mode}' is not train, eval or train_and_eval")
  run = _setup(config, model_dir, verbose)
  # Evaluation runs on the chief alone: the other workers have nothing to report.
  eval_input = _eval_input(run) if mode != "train" and run.chief else None
  if mode == "eval":
    # Evaluates what is there: the run's config.yaml is left as training wrote it.
    checkpoint = os.path.join(model_dir, CHECKPOINT_FILE)
    if not tf.io.gfile.exists(checkpoint):
      raise FileNotFoundError(errno.ENOENT, "no checkpoint to evaluate (train first)",
                              checkpoint)
    model = build_compiled_model(config, run.strategy)
    model.load_weights(checkpoint)
    return _evaluate(model, eval_input, model_dir, config) if run.chief else {}
  train_ds = _train_input(run)
  _write_config(run)
  model = build_compiled_model(config, run.strategy)
  _init_from_checkpoint(model, config, run.verbose)
  result = _fit(run, model, train_ds, eval_input, callbacks)
  _finish(run, result)
  if eval_input is None:
    return {}
  # A run resumed at its last step trains no epoch, so nothing was evaluated: do it now.
  return result.eval_metrics or _evaluate(model, eval_input, model_dir, config)


def _evaluate(model, eval_input, model_dir: str, config: ExperimentConfig) -> dict:
  eval_ds, coco_gt = eval_input
  metrics = coco_evaluator.evaluate_detections(model, eval_ds, coco_gt,
                                               config.trainer.validation_steps)
  coco_evaluator.write_json_atomic(metrics, os.path.join(model_dir, "eval_results.json"))
  return metrics
