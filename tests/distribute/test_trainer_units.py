"""Fast checks of the trainer's pieces: the fit plan, interval checks, chief detection, atomic
saves, backups, and the non-finite-loss guard (on a one-layer model)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf import distribute, trainer
from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.training.checkpoints import AtomicCheckpoint, StepBackup
from nasfpn_tf.training.checks import check_intervals
from nasfpn_tf.training.guard import NonFiniteLossGuard


@pytest.mark.parametrize("done,total,spe,expected", [
    (0, 30, 10, [(0, 3, 10)]),
    (0, 25, 10, [(0, 2, 10), (2, 3, 5)]),
    (13, 30, 10, [(1, 2, 7), (2, 3, 10)]),
    (13, 25, 10, [(1, 2, 7), (2, 3, 5)]),
    (21, 25, 10, [(2, 3, 4)]),
    (20, 30, 10, [(2, 3, 10)]),
    (30, 30, 10, []),
    (0, 5, 10, [(0, 1, 5)]),
])
def test_fit_plan(done, total, spe, expected):
  plan = trainer.fit_plan(done, total, spe)
  assert plan == expected
  assert done + sum((e - i) * s for i, e, s in plan) == total


def test_intervals_must_be_multiples_of_steps_per_execution():
  ok = ("runtime.steps_per_execution=4,trainer.train_steps=8,trainer.validation_interval=4,"
        "trainer.checkpoint_interval=4,trainer.backup_interval=4")
  check_intervals(load_config("", ok))
  with pytest.raises(ConfigError, match="trainer.backup_interval: 6 is not a multiple"):
    check_intervals(load_config("", [ok, "trainer.backup_interval=6"]))


@pytest.mark.parametrize("tf_config,chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_is_chief(monkeypatch, tf_config, chief):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  assert distribute.is_chief() is chief


def _tiny_model():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
  model.optimizer.build(model.trainable_variables)
  return model


def _data(bad_batch=None, batches=8):
  x = np.ones((batches * 2, 3), np.float32)
  if bad_batch is not None:
    x[bad_batch * 2] = np.nan
  return tf.data.Dataset.from_tensor_slices((x, np.zeros((batches * 2, 1), np.float32))).batch(2)


def test_backup_restores_step_and_optimizer_state_and_falls_back(tmp_path):
  model = _tiny_model()
  backup = StepBackup(str(tmp_path / "backup"), interval=2)
  model.fit(_data(), epochs=1, steps_per_epoch=6, callbacks=[backup], verbose=0,
            shuffle=False)
  assert [s for s, _ in backup.backups()] == [6, 4]  # the two newest are kept
  momentum = [v.numpy().copy() for v in model.optimizer.variables]
  fresh = _tiny_model()
  assert StepBackup(str(tmp_path / "backup"), 2).restore(fresh) == 6
  for a, b in zip(momentum, fresh.optimizer.variables):
    np.testing.assert_array_equal(a, b.numpy())
  # A damaged newest backup: the one before is used.
  with open(backup.backups()[0][1], "wb") as f:
    f.write(b"not hdf5")
  assert StepBackup(str(tmp_path / "backup"), 2).restore(_tiny_model()) == 4
  assert StepBackup(str(tmp_path / "none"), 2).restore(_tiny_model()) == 0


def test_nan_loss_stops_and_keeps_the_last_good_files(tmp_path):
  model = _tiny_model()
  guard = NonFiniteLossGuard()
  ckpt = str(tmp_path / "checkpoint.weights.h5")
  backup = StepBackup(str(tmp_path / "backup"), 2, guard)
  callbacks = [guard, AtomicCheckpoint(ckpt, 2, guard), backup]
  model.fit(_data(bad_batch=4), epochs=1, steps_per_epoch=8, callbacks=callbacks, verbose=0,
            shuffle=False)
  assert guard.bad_step == 5 and not np.isfinite(guard.bad_loss)
  assert [s for s, _ in backup.backups()] == [4, 2]
  good = _tiny_model()
  good.load_weights(ckpt)  # written at step 4, not overwritten at the end of training
  assert int(good.optimizer.iterations.numpy()) == 4
  assert all(np.all(np.isfinite(w)) for w in good.get_weights())


def test_a_missing_private_name_fails_loudly():
  # is_multi_worker read `_in_multi_worker_mode` with a default: had TensorFlow renamed it,
  # every worker of a cluster would have believed itself alone (and the chief).
  strategy = object.__new__(tf.distribute.MultiWorkerMirroredStrategy)
  strategy._extended = object()   # an `extended` without the private method
  with pytest.raises(RuntimeError, match=r"object\._in_multi_worker_mode does not exist in "
                                         r"TensorFlow 2\.\d+"):
    distribute.is_multi_worker(strategy)
  model = _tiny_model()
  del model._compile_loss
  with pytest.raises(RuntimeError, match="_compile_loss does not exist"):
    model.__class__ = type("Fitted", (distribute.DistributedFit, keras.Sequential), {})
    model._needs_data_to_build()
