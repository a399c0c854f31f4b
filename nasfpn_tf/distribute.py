"""tf.distribute strategies from `RuntimeConfig`, and what `model.fit` needs to run under them.

Which path each strategy takes (the README's "Training at scale" explains why):
  default       one device; the global-batch dataset.
  mirrored      all local GPUs (or logical CPUs); the global-batch dataset, split by Keras.
  multi_worker  every device of every TF_CONFIG worker; one dataset per worker, sharded by
                worker before decoding, batched per replica.
  tpu           every TPU core; one dataset per host, as for multi_worker.

All four train with `model.fit`. Under MultiWorkerMirroredStrategy Keras 3's `fit` breaks
in two places (keras-team/keras#20585); `DistributedFit` mends both, see its docstring, and
the trainer installs it on each model it builds (`install_distributed_fit`).
"""

from __future__ import annotations

import json
import os
import types
from typing import Callable, Optional

import keras
import tensorflow as tf
from absl import logging
from keras import tree

from nasfpn_tf.configs.experiment import RuntimeConfig

# MultiWorkerMirroredStrategy and TPU initialisation may happen only once per process, so
# repeated trainings in one process (tests, the search) reuse the first instance.
_SINGLETONS: dict[tuple, tf.distribute.Strategy] = {}


def private_attr(obj, name: str):
  """`obj.<name>`, a private TensorFlow/Keras name this module depends on.

  A `getattr` with a default would go on silently with the wrong answer if a new version
  renamed it (with `_in_multi_worker_mode` gone, every worker would think itself alone and
  write the chief's files); this fails loudly instead.

  Raises:
    RuntimeError: `name` is missing, naming it and the installed versions.
  """
  try:
    return getattr(obj, name)
  except AttributeError:
    raise RuntimeError(
        f"{type(obj).__name__}.{name} does not exist in TensorFlow {tf.__version__} / Keras "
        f"{keras.__version__}; nasfpn_tf.distribute depends on this private name: use the "
        "versions setup.cfg names") from None


def ensure_logical_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices (must run before TF initialises devices)."""
  cpus = tf.config.list_physical_devices("CPU")
  current = tf.config.get_logical_device_configuration(cpus[0])
  if current and len(current) >= count:
    return
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _mirrored(config: RuntimeConfig) -> tf.distribute.Strategy:
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return tf.distribute.MirroredStrategy()
  count = max(config.num_cpu_devices, 1)
  ensure_logical_cpus(count)
  devices = [d.name for d in tf.config.list_logical_devices("CPU")][:count]
  logging.info("No GPU: mirroring over %d logical CPU devices", len(devices))
  return tf.distribute.MirroredStrategy(devices)


def _tpu(config: RuntimeConfig) -> tf.distribute.Strategy:
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu or None)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def build_strategy(config: RuntimeConfig) -> tf.distribute.Strategy:
  """`default`: one device; `mirrored`: all local GPUs (or `num_cpu_devices` logical CPUs
  when there is no GPU); `multi_worker`: MultiWorkerMirroredStrategy from TF_CONFIG;
  `tpu`: TPUStrategy on `config.tpu` (a name, or a grpc:// address; empty: the local TPU)."""
  if config.strategy == "default":
    return tf.distribute.get_strategy()
  if config.strategy == "mirrored":
    return _mirrored(config)
  key = (config.strategy, config.tpu)
  if key not in _SINGLETONS:
    if config.strategy == "multi_worker":
      _SINGLETONS[key] = tf.distribute.MultiWorkerMirroredStrategy()
    elif config.strategy == "tpu":
      _SINGLETONS[key] = _tpu(config)
    else:
      raise ValueError(f"runtime.strategy: unknown strategy '{config.strategy}'")
  return _SINGLETONS[key]


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """True for MultiWorkerMirroredStrategy with more than one worker in its cluster.

  This is the condition under which Keras' TF trainer switches to cross-worker collectives
  (and fails, see `DistributedFit`); a single-worker MWMS behaves like MirroredStrategy.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  # Private, but it is exactly what keras/src/backend/tensorflow/trainer.py tests.
  return bool(private_attr(strategy.extended, "_in_multi_worker_mode")())


def uses_per_worker_datasets(strategy: tf.distribute.Strategy) -> bool:
  """Multi-worker and TPU training read one dataset per worker (host), sharded before decoding.

  Keras would otherwise auto-shard a global dataset *after* every worker has read and decoded
  all of it, which wastes (number of workers - 1) / number of workers of the input work.
  """
  return is_multi_worker(strategy) or isinstance(strategy, tf.distribute.TPUStrategy)


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
  """Whether this process writes checkpoints, backups, logs and exports.

  Without TF_CONFIG (or for non-multi-worker strategies) every process is the chief. In a
  multi-worker cluster it is the task of type "chief", or worker 0 when there is no chief.
  """
  if strategy is not None and not is_multi_worker(strategy):
    return True
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  task = tf_config.get("task", {})
  task_type, task_id = task.get("type"), int(task.get("index", 0))
  if task_type in (None, "chief"):
    return True
  has_chief = bool(tf_config.get("cluster", {}).get("chief"))
  return task_type == "worker" and task_id == 0 and not has_chief


def distribute_dataset(strategy: tf.distribute.Strategy,
                       dataset_fn: Callable[[Optional[tf.distribute.InputContext]],
                                            tf.data.Dataset]):
  """The training input for `model.fit` under `strategy`.

  Args:
    strategy: the strategy the model was built under.
    dataset_fn: input context (None: one global pipeline) -> batched dataset; with a
      context it must batch by the per-replica batch and shard by
      `context.input_pipeline_id` (see `data.input_pipeline.build_dataset`).

  Returns:
    A `tf.data.Dataset` (Keras splits its global batches over the local replicas) or a
    distributed dataset with one pipeline per worker.
  """
  if uses_per_worker_datasets(strategy):
    return strategy.distribute_datasets_from_function(dataset_fn)
  return dataset_fn(None)


def _first_local_value(value):
  if isinstance(value, tf.distribute.DistributedValues):
    return value.values[0]
  return value


# The `keras.Model` methods `install_distributed_fit` replaces on a model instance.
_HOOKS = ("_maybe_symbolic_build", "train_step", "test_step")
# Instance attribute holding the replaced methods (bound to the model), by name.
_ORIGINALS = "_distributed_fit_originals"


def install_distributed_fit(model: keras.Model) -> keras.Model:
  """Makes `model.fit` work under MultiWorkerMirroredStrategy (see `DistributedFit`).

  Installs `DistributedFit`'s methods on this one instance, in front of its class's own
  (which they call): the trainer calls this once per model it builds, before the first `fit`
  (Keras traces `train_step` into `train_function` on the first call and keeps it). Under any
  other strategy the methods change nothing but skip the batch Keras would draw only to learn
  shapes it already knows (see `DistributedFit._maybe_symbolic_build`).

  Why on the instance, not as a base class of the model: the fix is about how a model is
  trained, not what it is, so `nasfpn_tf/modeling/` stays free of it; and the class is what
  `model.keras` records. A model class that inherits a mixin is fine, but a subclass made at
  run time (to mix it in later) would be saved under its own, unregistered name, and the file
  would not load. Attributes set on the instance are in neither the config nor the weights:
  the saved file is the same with or without the fix, and a subclass overriding `fit` (the
  one-shot `SupernetModel`) keeps working, since `fit` is left alone.

  Returns:
    `model` (installing twice does nothing).
  """
  if _ORIGINALS in vars(model):
    return model
  # object.__setattr__: past Keras' attribute tracking, which has nothing to track here.
  object.__setattr__(model, _ORIGINALS, {name: getattr(model, name) for name in _HOOKS})
  for name in _HOOKS:
    object.__setattr__(model, name, types.MethodType(getattr(DistributedFit, name), model))
  return model


def _original(model: keras.Model, name: str):
  """The method `install_distributed_fit` replaced on `model`, bound to it."""
  return vars(model)[_ORIGINALS][name]


class DistributedFit:
  """Lets `keras.Model.fit` (Keras 3, TF backend) train under MultiWorkerMirroredStrategy.

  Keras 3.15's `fit` fails with more than one worker in two places (keras-team/keras#20585):

  1. Before training, `_maybe_symbolic_build` draws one distributed batch and averages it
     across replicas with `strategy.reduce("MEAN", (x, y), axis=None)`, only to learn its
     shapes. The collective strategy cannot reduce a nested structure (TensorFlow's own
     "TODO(josh11b): support `value` being a nest") and tries to convert the whole
     structure into one tensor: "Attempt to convert a value (PerReplica:{...})". We hand
     the symbolic build the first local replica's batch instead: same shapes, no
     communication (and no averaging of integer labels).
  2. After every step, Keras reduces the logs with `strategy.reduce("MEAN", v, axis=0)`
     when it sees multiple workers, which fails on the scalar logs every `train_step`
     returns ("Invalid reduction dimension 0 for input with 0 dimensions"). Under
     multi-worker training `train_step` / `test_step` return each log as a one-element
     vector, so that Keras' reduction along axis 0 is the global mean over all replicas
     of all workers: every worker then sees the same logs, which also keeps decisions
     taken on them (stopping on a NaN loss) identical across workers.

  Everything else (the step itself, callbacks, progress bar) is Keras' own, so there is one
  training code for every strategy. Not a base class: `install_distributed_fit` binds these
  methods to one model instance (`self` is the model) and keeps the ones they replace, which
  they call where a mixin would call `super()`. The private Keras names used are read with
  `private_attr` (an error if missing), and the replaced hook is checked to exist in Keras
  when this module is imported (a replacement of a renamed hook would never run).
  """

  def _needs_data_to_build(self) -> bool:
    """Whether Keras' symbolic build has anything to learn from a batch: an unbuilt model
    (once built, every layer on its call path is too; a layer off it, such as the detection
    generator, would not be built by a symbolic call either) or compiled losses/metrics."""
    compiled = [private_attr(self, "_compile_metrics"), private_attr(self, "_compile_loss")]
    return not self.built or any(part is not None and not part.built for part in compiled)

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    build = _original(self, "_maybe_symbolic_build")
    if private_attr(self, "_distribute_strategy") is None:
      # No strategy at build time: Keras builds lazily and draws no batch; keep that.
      return build(iterator=iterator, data_batch=data_batch)
    if not DistributedFit._needs_data_to_build(self):
      # Only the optimizer may be left. Drawing a batch would start the input pipeline once
      # more for nothing, and move a seeded shuffle on by one pass, so that the data seen by
      # training would depend on the strategy.
      if self.optimizer is not None and not self.optimizer.built:
        with self.distribute_strategy.scope():
          self.optimizer.build(self.trainable_variables)
      return None
    if iterator is not None and data_batch is None:
      for _, _, batches in iterator:
        data_batch = tree.map_structure(_first_local_value, next(batches))
        break
    return build(data_batch=data_batch)

  def _worker_reducible_logs(self, logs: dict) -> dict:
    if not is_multi_worker(self.distribute_strategy):
      return logs
    return {k: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v
            for k, v in logs.items()}

  def train_step(self, data):
    return DistributedFit._worker_reducible_logs(self, _original(self, "train_step")(data))

  def test_step(self, data):
    return DistributedFit._worker_reducible_logs(self, _original(self, "test_step")(data))


# A renamed Keras hook would leave the replacement above unused, and multi-worker fit broken.
private_attr(keras.Model, "_maybe_symbolic_build")
