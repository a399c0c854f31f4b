"""Atomic, versioned checkpoints of a search agent plus the search loop's counters.

Each checkpoint is a folder `ckpt-NNNNNN` (N = the agent's update count) written
under a temporary name, fsynced and then renamed, so a kill at any moment leaves
either the previous checkpoint or the new one complete — never half of one. The
latest checkpoint is the highest-numbered folder; the two newest are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Optional

_NAME = re.compile(r"^ckpt-(\d{6,})$")
_META_FILE = "search_state.json"


def _fsync_tree(directory: str) -> None:
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      fsync_path(path)
  fsync_path(directory)


def fsync_path(path: str) -> None:
  """Flushes a file's data, or a directory's entries (a rename), to disk."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


class CheckpointStore:
  """Saves and restores an agent (anything with `save_files`/`load_files`).

  Args:
    root: folder holding the `ckpt-*` folders.
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, root: str, keep: int = 2):
    self.root = root
    self.keep = keep
    os.makedirs(root, exist_ok=True)

  def list(self) -> list[str]:
    """Complete checkpoints, oldest first."""
    names = [n for n in os.listdir(self.root) if _NAME.match(n)]
    return [os.path.join(self.root, n) for n in sorted(names, key=lambda n: int(n[5:]))]

  def latest(self) -> Optional[str]:
    found = self.list()
    return found[-1] if found else None

  def save(self, agent: Any, step: int, meta: dict[str, Any]) -> str:
    """Writes checkpoint `step` of `agent` with the loop counters `meta`; returns its path."""
    final = os.path.join(self.root, f"ckpt-{step:06d}")
    tmp = os.path.join(self.root, f".tmp-ckpt-{step:06d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    agent.save_files(tmp)
    with open(os.path.join(tmp, _META_FILE), "w") as f:
      json.dump(meta, f)
    _fsync_tree(tmp)
    if os.path.exists(final):   # the same step saved again (e.g. a final partial batch)
      shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_path(self.root)
    self._prune()
    return final

  def _prune(self) -> None:
    for old in self.list()[:-self.keep]:
      shutil.rmtree(old, ignore_errors=True)
    for name in os.listdir(self.root):
      if name.startswith(".tmp-ckpt-") and not name.endswith(f"-{os.getpid()}"):
        shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)   # left by a kill

  def restore(self, agent: Any) -> Optional[dict[str, Any]]:
    """Loads the latest checkpoint into `agent`; returns its meta, or None if there is none."""
    path = self.latest()
    if path is None:
      return None
    agent.load_files(path)
    with open(os.path.join(path, _META_FILE)) as f:
      return json.load(f)
