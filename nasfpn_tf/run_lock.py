"""One run per model folder: MODEL_DIR/.run.lock holds the owner's pid and host name.

Two runs writing the same folder would interleave their checkpoints, backups and logs. The
lock is a file created with O_CREAT | O_EXCL (atomic on local disks and NFSv3+), holding
`pid hostname`, and removed when the run ends, however it ends short of a SIGKILL.

A lock left by a killed run is stale when its host is this host and its pid no longer runs:
the next run takes it over (with a warning). A lock held from another host is never judged
stale, since its pid cannot be checked from here: on a folder shared between machines, a run
killed on one machine keeps the others out until its host reruns in the folder, or someone
deletes the file after checking that run is dead (the message names the file). A pid reused
by an unrelated process on the same host reads as alive: delete the file the same way.

Why not fcntl/flock: a kernel lock vanishes with its process, but flock is a no-op or
per-host on many network file systems. Non-local folders (gs://, ...) are not locked:
object stores offer no create-if-absent through tf.io.gfile.

Example:
  with RunLock("runs/default"):
    train(...)
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Optional

from absl import logging

LOCK_FILE = ".run.lock"


class LockError(RuntimeError):
  """Another run holds the model folder, or the folder cannot be written."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, owned by someone else
    return True
  return True


class RunLock:
  """Context manager holding MODEL_DIR/.run.lock (see the module docstring).

  Creates `model_dir` if needed; on release, removes the lock and the folders it created,
  as long as nothing else was written into them.

  Args:
    model_dir: the run's model folder.
  """

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_FILE)
    self._held = False
    self._made_dirs: list[str] = []  # folders this lock created, deepest first

  def _owner(self) -> Optional[tuple[int, str]]:
    try:
      with open(self.path) as f:
        pid, host = f.read().split()
      return int(pid), host
    except FileNotFoundError:
      return None
    except (OSError, ValueError):  # half-written by a run killed while creating it
      return -1, ""

  def _create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True

  def acquire(self) -> None:
    """Takes the lock.

    Raises:
      LockError: another live run holds it, or the folder cannot be written.
    """
    if "://" in self.model_dir:
      logging.warning("%s is not a local folder: it is not locked against a second run",
                      self.model_dir)
      return
    try:
      missing, folder = [], os.path.abspath(self.model_dir)
      while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
      os.makedirs(self.model_dir, exist_ok=True)
      self._made_dirs = missing
      if self._create():
        self._held = True
        return
      owner = self._owner()
      host = socket.gethostname()
      if owner is not None and owner[1] == host and owner[0] > 0 and _alive(owner[0]):
        raise LockError(f"{self.model_dir} is in use by run pid {owner[0]} on this host "
                        f"({self.path}); wait for it or use another --model_dir")
      if owner is not None and owner[1] not in ("", host):
        raise LockError(f"{self.model_dir} is in use by pid {owner[0]} on host {owner[1]} "
                        f"({self.path}); if that run is dead, delete the file")
      logging.warning("Taking over %s, left by pid %s, which no longer runs", self.path,
                      owner[0] if owner else "?")
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      if not self._create():
        raise LockError(f"{self.model_dir} was just taken by another run ({self.path})")
      self._held = True
    except OSError as e:
      self._cleanup_dir()
      reason = e.strerror or errno.errorcode.get(e.errno, str(e))
      raise LockError(f"cannot write into {self.model_dir}: {reason}") from None

  def release(self) -> None:
    if self._held:
      self._held = False
      if self._owner() == (os.getpid(), socket.gethostname()):
        os.remove(self.path)
    self._cleanup_dir()

  def _cleanup_dir(self) -> None:
    made, self._made_dirs = self._made_dirs, []
    for folder in made:
      try:
        os.rmdir(folder)  # only succeeds when nothing was written into it
      except OSError:
        return

  def __enter__(self) -> "RunLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
