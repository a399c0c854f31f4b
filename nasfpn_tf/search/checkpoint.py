"""Atomic, versioned checkpoints of a search agent plus the search loop's counters.

Each checkpoint is a folder `ckpt-NNNNNN` (N = the agent's update count) written
through `file_io.atomic_save`: under a temporary name, fsynced and then renamed,
so a kill at any moment leaves either the previous checkpoint or the new one
complete — never half of one. The latest checkpoint is the highest-numbered
folder; the two newest are kept. Importing this module loads no TensorFlow
(file_io, which does, is imported when a store is used).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

_NAME = re.compile(r"^ckpt-(\d{6,})$")
_META_FILE = "search_state.json"


def fsync_path(path: str) -> None:
  """Flushes a file's data, or a directory's entries (a rename), to disk (local paths only)."""
  if "://" in path:
    return
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
    from nasfpn_tf import file_io  # local: file_io imports TensorFlow

    self.root = root
    self.keep = keep
    file_io.makedirs(root)

  def list(self) -> list[str]:
    """Complete checkpoints, oldest first."""
    from nasfpn_tf import file_io

    names = [os.path.basename(p.rstrip("/")) for p in file_io.glob(os.path.join(self.root, "ckpt-*"))]
    names = [n for n in names if _NAME.match(n)]
    return [os.path.join(self.root, n) for n in sorted(names, key=lambda n: int(n[5:]))]

  def latest(self) -> Optional[str]:
    found = self.list()
    return found[-1] if found else None

  def save(self, agent: Any, step: int, meta: dict[str, Any]) -> str:
    """Writes checkpoint `step` of `agent` with the loop counters `meta`; returns its path.

    The same step saved again (e.g. a final partial batch) replaces the earlier one.
    """
    from nasfpn_tf import file_io

    def write(tmp: str) -> None:
      file_io.makedirs(tmp)
      agent.save_files(tmp)
      file_io.write_json(os.path.join(tmp, _META_FILE), meta, indent=None)
      fsync_path(tmp)   # the folder's entries; atomic_save flushes the files' data

    final = file_io.atomic_save(write, os.path.join(self.root, f"ckpt-{step:06d}"))
    fsync_path(self.root)   # the rename itself
    self._prune()
    return final

  def _prune(self) -> None:
    from nasfpn_tf import file_io

    for old in self.list()[:-self.keep]:
      file_io.remove(old)
    file_io.clean_stale_temp_files(self.root)   # left by a kill

  def restore(self, agent: Any) -> Optional[dict[str, Any]]:
    """Loads the latest checkpoint into `agent`; returns its meta, or None if there is none."""
    from nasfpn_tf import file_io

    path = self.latest()
    if path is None:
      return None
    agent.load_files(path)
    return json.loads(file_io.read_text(os.path.join(path, _META_FILE)))
