"""Faults a run meets: rerun after training finished, temp files of a killed run, a diverged
loss, a starting checkpoint. Tiny in-process trainings (ResNet-10 x0.25, 128 px, 2-4 steps)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from nasfpn_tf import trainer
from nasfpn_tf.configs.loading import load_config
from tests.distribute import _helpers as h


def _config(tmp_path, extra: str = "", steps: int = 2):
  schedule = (f"trainer.train_steps={steps},trainer.validation_interval={steps},"
              f"trainer.backup_interval={steps},trainer.checkpoint_interval={steps},"
              "trainer.validation_steps=1,trainer.learning_rate.warmup_steps=0")
  override = f"{h.TINY_MODEL},{h.tiny_data(str(tmp_path / 'data'), batch=2)},{schedule}"
  return load_config("", [override + (f",{extra}" if extra else "")])


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _temp_files(folder) -> list[str]:
  return [os.path.join(root, n) for root, dirs, files in os.walk(folder)
          for n in files + dirs if ".tmp-" in n]


@pytest.mark.slow
def test_a_finished_run_goes_straight_to_evaluation(tmp_path, capsys):
  config, model_dir = _config(tmp_path), str(tmp_path / "m")
  first = trainer.train_and_evaluate(config, model_dir, verbose=0)
  model_file = os.path.join(model_dir, trainer.MODEL_FILE)
  stamp = os.stat(model_file).st_mtime_ns
  # Killed during the export: what a SIGKILL during a save leaves, under temp names.
  dead = _dead_pid()
  os.makedirs(os.path.join(model_dir, "backup"))
  for name in (f"model.tmp-{dead}-0123abcd.keras", f"checkpoint.tmp-{dead}-0123abcd.weights.h5",
               f"backup/step-000000002.tmp-{dead}-0123abcd.weights.h5"):
    with open(os.path.join(model_dir, name), "wb") as f:
      f.write(b"half")
  capsys.readouterr()

  second = trainer.train_and_evaluate(config, model_dir, verbose=1)
  out = capsys.readouterr().out
  # Before: trained all steps again from 0 and replaced model.keras.
  assert f"Training finished earlier in {model_dir} (step 2)" in out, out
  assert "Epoch" not in out, out
  assert os.stat(model_file).st_mtime_ns == stamp
  assert set(second) == set(first) and second == pytest.approx(first, abs=1e-6)
  assert _temp_files(model_dir) == []
  # Another length in the same folder trains afresh (from step 0, to its own end).
  third = trainer.train(_config(tmp_path, steps=4), model_dir, verbose=0)
  assert third.resumed_from == 0 and third.steps == 4 and not third.already_trained


@pytest.mark.slow
def test_a_diverged_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path):
  # A learning rate of 1e6 (written 1000000.0: YAML reads "1e6" as a string) sends the loss to inf/NaN within a few steps; checkpoints every step.
  config = _config(tmp_path, "trainer.learning_rate.base_lr=1000000.0,trainer.checkpoint_interval=1,"
                             "trainer.backup_interval=1,trainer.learning_rate.type=constant",
                   steps=6)
  model_dir = str(tmp_path / "m")
  with pytest.raises(trainer.TrainingDivergedError,
                     match=r"^(loss (nan|inf|-inf)|the weights became non-finite) at step "
                           r"\d; nothing was saved after the last good step") as err:
    trainer.train_and_evaluate(config, model_dir, verbose=0)
  bad_step = int(err.value.args[0].split(" at step ")[1].split(";")[0])
  assert 2 <= bad_step <= 6
  assert os.path.join(model_dir, "checkpoint.weights.h5") in str(err.value)
  assert not os.path.exists(os.path.join(model_dir, trainer.MODEL_FILE))
  assert not os.path.exists(os.path.join(model_dir, "eval_results.json"))
  # The checkpoint is the last good step's, with finite weights (before the fix: the weights
  # of the step whose update overflowed, the loss of which was still finite).
  model = trainer.build_compiled_model(config, trainer.distribute.build_strategy(config.runtime))
  model.load_weights(os.path.join(model_dir, "checkpoint.weights.h5"))
  assert int(model.optimizer.iterations.numpy()) == bad_step - 1
  assert all(np.all(np.isfinite(w)) for w in model.get_weights())
  assert _temp_files(model_dir) == []


@pytest.mark.slow
def test_init_checkpoint_starts_from_its_weights(tmp_path):
  source = trainer.train(_config(tmp_path), str(tmp_path / "a"), verbose=0)
  init = os.path.join(str(tmp_path / "a"), trainer.CHECKPOINT_FILE)
  config = _config(tmp_path, f"task.init_checkpoint={init},trainer.learning_rate.base_lr=0.000000001")
  result = trainer.train(config, str(tmp_path / "b"), verbose=0)
  # Its own schedule from step 0 (the checkpoint's optimizer step is not carried over) ...
  assert result.resumed_from == 0 and result.steps == 2
  # ... from the source's weights (a learning rate of 1e-9 leaves them nearly unchanged;
  # batch-norm statistics move with the new batches, so only trainable weights are compared).
  for a, b in zip(source.model.trainable_weights, result.model.trainable_weights):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  fresh = trainer.build_compiled_model(config, trainer.distribute.build_strategy(config.runtime))
  assert any(not np.allclose(np.asarray(a), np.asarray(b), atol=1e-3)
             for a, b in zip(fresh.trainable_weights, result.model.trainable_weights))


@pytest.mark.slow
def test_a_run_in_a_non_local_model_dir(tmp_path):
  # gs:// failed on the first config write (open/os.replace); ram:// stands in for it offline.
  import uuid
  from nasfpn_tf import file_io
  from nasfpn_tf.serving import export_lib
  model_dir = f"ram://run_{uuid.uuid4().hex}"
  config = _config(tmp_path, "trainer.backup_interval=1,trainer.checkpoint_interval=1")
  metrics = trainer.train_and_evaluate(config, model_dir, verbose=0)
  assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
  names = sorted(p[len(model_dir) + 1:].rstrip("/") for p in file_io.glob(f"{model_dir}/*"))
  assert names == ["checkpoint.weights.h5", "config.yaml", "eval_results.json", "logs",
                   "model.keras"]   # backups removed, no temporary file left
  assert load_config(f"{model_dir}/config.yaml") == config
  model, beside = export_lib.load_trained_model(model_dir)   # what --mode=export reads
  assert beside == config and model.num_classes == config.task.model.num_classes
  file_io.remove(model_dir)
