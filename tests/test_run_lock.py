"""MODEL_DIR lock: a second run is refused, a lock left by a killed run is taken over."""

import os
import socket
import subprocess
import sys

import pytest

from nasfpn_tf.run_lock import LOCK_FILE, LockError, RunLock


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_second_lock_on_the_same_folder_is_refused(tmp_path):
  with RunLock(str(tmp_path)):
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    with pytest.raises(LockError, match=f"in use by run pid {os.getpid()} on this host"):
      RunLock(str(tmp_path)).acquire()
  assert not (tmp_path / LOCK_FILE).exists()


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
  # A process killed with SIGKILL cannot remove its lock: the file names a pid that is gone.
  (tmp_path / LOCK_FILE).write_text(f"{_dead_pid()} {socket.gethostname()}\n")
  with RunLock(str(tmp_path)):
    assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())
  assert not (tmp_path / LOCK_FILE).exists()


def test_half_written_lock_is_taken_over(tmp_path):
  (tmp_path / LOCK_FILE).write_text("")  # killed between creating and writing the file
  with RunLock(str(tmp_path)):
    assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def test_lock_from_another_host_is_never_judged_stale(tmp_path):
  (tmp_path / LOCK_FILE).write_text(f"{_dead_pid()} some-other-host\n")
  with pytest.raises(LockError, match="on host some-other-host .* if that run is dead, delete"):
    RunLock(str(tmp_path)).acquire()
  assert (tmp_path / LOCK_FILE).exists()


def test_folders_the_lock_made_go_when_nothing_was_written(tmp_path):
  model_dir = tmp_path / "a" / "b"
  with RunLock(str(model_dir)):
    assert model_dir.is_dir()
  assert not (tmp_path / "a").exists()
  with RunLock(str(model_dir)):
    (model_dir / "config.yaml").write_text("x")
  assert sorted(os.listdir(model_dir)) == ["config.yaml"]


def test_two_processes_one_refused(tmp_path):
  """The second of two real processes on one folder exits with the lock's message."""
  script = ("import sys, time; from nasfpn_tf.run_lock import RunLock\n"
            "with RunLock(sys.argv[1]):\n"
            "  print('locked', flush=True); time.sleep(60)\n")
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
  first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env,
                           stdout=subprocess.PIPE, text=True)
  try:
    assert first.stdout.readline().strip() == "locked"
    second = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert f"in use by run pid {first.pid} on this host" in second.stderr
    first.kill()  # SIGKILL: the lock stays behind, stale
    first.wait()
    with RunLock(str(tmp_path)):
      pass
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
