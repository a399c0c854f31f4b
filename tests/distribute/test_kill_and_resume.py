"""`run.py` killed with SIGKILL mid-epoch resumes, with the same command, from its last backup
and stops at exactly trainer.train_steps."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.distribute import _helpers as h

TOTAL = 40
# Epochs of 15 steps: a kill after backup 8, 12, ... lands mid-epoch, and 40 is not a whole
# number of epochs either (15 + 15 + 10).
SCHEDULE = (f"trainer.train_steps={TOTAL},trainer.validation_interval=15,"
            "trainer.backup_interval=4,trainer.checkpoint_interval=15,"
            "trainer.learning_rate.warmup_steps=5")
BACKUP = re.compile(r"^step-(\d{9})\.weights\.h5$")


def _backup_steps(backup_dir: str) -> list[int]:
  if not os.path.isdir(backup_dir):
    return []
  return sorted(int(m.group(1)) for n in os.listdir(backup_dir) if (m := BACKUP.match(n)))


def _command(model_dir: str, data_dir: str) -> list[str]:
  override = f"{h.TINY_MODEL},{h.tiny_data(data_dir, batch=2)},{SCHEDULE}"
  return [sys.executable, os.path.join(h.ROOT, "run.py"), "--mode=train", "--config_file=",
          f"--model_dir={model_dir}", f"--params_override={override}"]


def _run_until_backup(cmd: list[str], backup_dir: str, min_step: int, timeout: float) -> int:
  """Starts `cmd`, SIGKILLs it once a backup of step >= min_step exists; returns that step."""
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=h.env(), cwd=h.ROOT)
  deadline = time.time() + timeout
  try:
    while time.time() < deadline and proc.poll() is None:
      steps = _backup_steps(backup_dir)
      if steps and steps[-1] >= min_step:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return _backup_steps(backup_dir)[-1]
      time.sleep(0.05)
    raise AssertionError(f"no backup of step >= {min_step} before the run ended "
                         f"(rc {proc.poll()}): {proc.stderr.read()[-3000:] if proc.stderr else ''}")
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.mark.slow
def test_sigkill_then_same_command_resumes(tmp_path):
  import keras
  import nasfpn_tf.trainer  # noqa: F401  (registers the model and schedule classes)
  model_dir, backup_dir = str(tmp_path / "model"), str(tmp_path / "model" / "backup")
  cmd = _command(model_dir, str(tmp_path / "data"))
  killed_at = _run_until_backup(cmd, backup_dir, min_step=8, timeout=180)
  assert 8 <= killed_at < TOTAL
  print(f"killed after the backup of step {killed_at}")
  # Only complete backups (no temporary files) carry a final name; at most two are kept.
  assert 1 <= len(_backup_steps(backup_dir)) <= 2

  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=h.env(), cwd=h.ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The step printed is read back from the restored optimizer, so the optimizer state came
  # from the newest backup.
  assert f"Resuming from the backup at step {killed_at} of {TOTAL}" in proc.stdout, proc.stdout
  model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
  assert int(model.optimizer.iterations.numpy()) == TOTAL
  assert not os.path.exists(backup_dir)
  assert not [n for n in os.listdir(model_dir) if ".tmp-" in n]
