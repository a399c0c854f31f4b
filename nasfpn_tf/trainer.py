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

Read top to bottom, after the entry points (`train`, `run_experiment`, `train_and_evaluate`):
  1. data          `_train_input`, `_eval_input` (data/input_pipeline.py; training/checks.py)
  2. model         `build_compiled_model` (modeling/factory.py, optimization.py; the multi-worker
                   fix of `fit` from distribute.py), `_init_from_checkpoint`
  3. fit plan      `fit_plan`: the `model.fit` calls from the restored step to train_steps
  4. fit           `_fit` with the callbacks of training/ (guard, checkpoint, backup, COCO
                   evaluation, summaries)
  5. evaluate      `_evaluate` (evaluation/coco_evaluator.py)
  6. model file    `_finish`: MODEL_DIR/model.keras, then the backups go. Exporting it is
                   serving/export_lib.py's (run.py hands it the model `run_experiment` returns).

Run (see run.py for the flags):
  python run.py --config_file=configs/retinanet_r50_nasfpn_640_coco.yaml --model_dir=runs/coco
"""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import Sequence

import keras
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
from nasfpn_tf.training.checkpoints import AtomicCheckpoint, StepBackup
from nasfpn_tf.training.checks import (check_batch, check_init_checkpoint, check_intervals,
                                       check_num_classes)
from nasfpn_tf.training.coco_eval import CocoEvalCallback
from nasfpn_tf.training.guard import NonFiniteLossGuard
from nasfpn_tf.training.intervals import optimizer_step
from nasfpn_tf.training.summaries import StepSummaries

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint.weights.h5"
BACKUP_DIR = "backup"


class TrainingDivergedError(FloatingPointError):
  """The loss became NaN or infinite; nothing was saved from the diverged weights."""


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


@dataclasses.dataclass
class ExperimentResult:
  """What `run_experiment` did.

  Attributes:
    model: the trained model (mode eval: the checkpoint's), in memory: what run.py draws
      detections with and exports, without reading model.keras back.
    metrics: the last COCO metrics ({}: no evaluation in this process).
  """
  model: keras.Model
  metrics: dict[str, float]


# ----------------------------------------------------------------------------- entry points

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


def run_experiment(config: ExperimentConfig, model_dir: str, mode: str = "train_and_eval",
                   verbose: int = 1, callbacks: Sequence[keras.callbacks.Callback] = ()
                   ) -> ExperimentResult:
  """Trains (and evaluates) the experiment; returns the model and the last COCO metrics.

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
    metrics = _evaluate(model, eval_input, model_dir, config) if run.chief else {}
    return ExperimentResult(model, metrics)
  train_ds = _train_input(run)
  _write_config(run)
  model = build_compiled_model(config, run.strategy)
  _init_from_checkpoint(model, config, run.verbose)
  result = _fit(run, model, train_ds, eval_input, callbacks)
  _finish(run, result)
  if eval_input is None:
    return ExperimentResult(model, {})
  # A run resumed at its last step trains no epoch, so nothing was evaluated: do it now.
  return ExperimentResult(
      model, result.eval_metrics or _evaluate(model, eval_input, model_dir, config))


def train_and_evaluate(config: ExperimentConfig, model_dir: str,
                       mode: str = "train_and_eval", verbose: int = 1,
                       callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, float]:
  """`run_experiment`'s COCO metrics ({} if none), for callers that need no model."""
  return run_experiment(config, model_dir, mode, verbose, callbacks).metrics


# ----------------------------------------------------------------------------- setup

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


def set_precision_policy(config: ExperimentConfig, strategy: tf.distribute.Strategy) -> str:
  """Sets Keras' global dtype policy from `runtime.mixed_precision_dtype` (see precision.py)."""
  try:
    return precision.set_policy(config.runtime.mixed_precision_dtype, strategy)
  except precision.PrecisionError as e:
    raise ConfigError("runtime.mixed_precision_dtype", str(e)) from None


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


# ----------------------------------------------------------------------------- 1. data

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


def _eval_input(run: _Run):
  """(dataset, COCO ground truth) of the validation split."""
  data = run.config.task.validation_data
  eval_ds, info = build_dataset(data, run.config.task.model)
  check_num_classes(info, run.config.task.model.num_classes, "validation_data")
  return eval_ds, ground_truth(data, info)


def ground_truth(data: DataConfig, info: SourceInfo):
  """COCO ground truth of an evaluation split: its json when it has one, else built
  from the raw examples (TFDS, TFRecords)."""
  annotation_file, _ = coco_paths(data)
  if annotation_file:
    return coco_evaluator.load_coco_gt(annotation_file)
  raw, _ = raw_dataset(data)
  return coco_evaluator.coco_gt_from_examples(raw.as_numpy_iterator(), info.category_names)


# ----------------------------------------------------------------------------- 2. model

def build_compiled_model(config: ExperimentConfig, strategy: tf.distribute.Strategy):
  """Model, optimizer (built, so a backup can be loaded into it) and compile, in scope.

  The model gets `distribute.install_distributed_fit`, which `fit` needs under a multi-worker
  strategy (on the instance: see its docstring for why not on the class).
  """
  sync_bn = config.task.model.norm.sync
  if sync_bn is None:
    sync_bn = strategy.num_replicas_in_sync > 1
  with strategy.scope():
    model = distribute.install_distributed_fit(build_model(config.task.model, sync_bn=sync_bn))
    if decay_in_loss(config.trainer):
      model.l2_weight_decay = config.task.losses.l2_weight_decay
    optimizer = build_optimizer(config.trainer, config.task.train_data.global_batch_size,
                                config.task.losses.l2_weight_decay)
    model.compile(optimizer=optimizer, jit_compile=config.runtime.jit_compile,
                  steps_per_execution=config.runtime.steps_per_execution)
    model.optimizer.build(model.trainable_variables)
  return model


def _init_from_checkpoint(model, config: ExperimentConfig, verbose: int) -> None:
  path = config.task.init_checkpoint
  if not path:
    return
  if path.endswith((".weights.h5", ".keras")):
    load_init_checkpoint(model, path)   # weights only: the optimizer starts fresh
  else:
    checkpoint_import.initialize(model, path, config.task.init_checkpoint_modules, verbose)


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


# ----------------------------------------------------------------------------- 3. fit plan

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
    step = optimizer_step(model)
  if step == run.config.trainer.train_steps:
    return True
  for v, value in zip(variables, before):
    v.assign(value)
  return False


# ----------------------------------------------------------------------------- 4. fit

def _callbacks(run: _Run, guard: NonFiniteLossGuard, backup: StepBackup,
               eval_input, extra: Sequence[keras.callbacks.Callback] = ()
               ) -> list[keras.callbacks.Callback]:
  t = run.config.trainer
  cbs = [guard,  # first: the savers below look at its verdict for the same step
         AtomicCheckpoint(os.path.join(run.model_dir, CHECKPOINT_FILE), t.checkpoint_interval,
                          guard, enabled=run.chief),
         backup]
  if eval_input is not None:
    cbs.append(CocoEvalCallback(*eval_input, run.model_dir, max_steps=t.validation_steps,
                                guard=guard))
  if run.chief:
    # Last, so that its epoch summaries include the AP the evaluation adds to the logs.
    cbs.append(StepSummaries(os.path.join(run.model_dir, "logs")))
  # The caller's (e.g. a search reporting each evaluation) see the AP in the epoch logs.
  return cbs + list(extra)


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
  evals = [c for c in callbacks if isinstance(c, CocoEvalCallback)]
  return TrainResult(model, history, optimizer_step(model), done,
                     evals[0].last_metrics if evals else {})


# ----------------------------------------------------------------------------- 5. evaluate

def _evaluate(model, eval_input, model_dir: str, config: ExperimentConfig) -> dict:
  eval_ds, coco_gt = eval_input
  metrics = coco_evaluator.evaluate_detections(model, eval_ds, coco_gt,
                                               config.trainer.validation_steps)
  coco_evaluator.write_json_atomic(metrics, os.path.join(model_dir, "eval_results.json"))
  return metrics


# ----------------------------------------------------------------------------- 6. model file

def _finish(run: _Run, result: TrainResult) -> None:
  """Chief: the final model file, then (only then) the backups go, as Keras' own
  BackupAndRestore does. A later run in this folder with the same train_steps finds the
  training finished (`_restore_finished`); with other train_steps it starts afresh."""
  if not run.chief or result.already_trained:
    return
  file_io.atomic_save(result.model.save, os.path.join(run.model_dir, MODEL_FILE))
  file_io.remove(os.path.join(run.model_dir, BACKUP_DIR))
