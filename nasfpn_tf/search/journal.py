"""The journal of finished trials: one JSON object per line, appended and fsynced.

The journal is the search's source of truth: a restarted search replays it, the
reports (best specs, plot) are drawn from it, and a trial counts as finished
exactly when its line is on disk. A line torn by a kill mid-write is dropped
on the next open. Needs no TensorFlow (Ray workers read it).

The one writer in search/ that does not go through `nasfpn_tf.file_io`: a trial is
finished only once its line is fsynced, and `tf.io.gfile` can do neither part of
that — it has no fsync, and on an object store (gs://) an object cannot be appended
to, only rewritten whole, so each trial would rewrite the journal. `append_line`
therefore uses the os module, and a search directory must be a local (or mounted)
disk. The search's events log (`events.jsonl`) is appended the same way.

A record:
  {"trial": 3, "proposal": 3, "status": "ok", "reward": 0.41, "wall_time_s": 12.5,
   "start_time": 1.7e9, "end_time": 1.7e9, "cells": [{"level": 4, ...}, ...],
   "spec_string": "P4:gp:1,3 ...", "min_level": 3, "max_level": 7,
   "actions": [...], "log_prob": -41.5, "policy_version": 0, "error": null}
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

from nasfpn_tf.architecture_spec import ArchitectureSpec, from_records

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclasses.dataclass
class TrialRecord:
  """A finished trial (successful or failed); `reward` is None for a failed one."""
  trial: int
  proposal: int
  status: str
  reward: Optional[float]
  wall_time_s: float
  start_time: float
  end_time: float
  cells: list
  spec_string: str
  min_level: int
  max_level: int
  actions: list
  log_prob: float
  policy_version: int = 0
  error: Optional[str] = None

  @property
  def ok(self) -> bool:
    return self.status == STATUS_OK

  @property
  def spec(self) -> ArchitectureSpec:
    """The architecture (built from the stored cell records)."""
    return from_records(self.cells, self.min_level, self.max_level)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=False)

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> "TrialRecord":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


class Journal:
  """Append-only JSON-lines file of `TrialRecord`s.

  Args:
    path: the file; created on the first append.
  """

  def __init__(self, path: str):
    self.path = path
    self._drop_torn_tail()

  def _drop_torn_tail(self) -> None:
    """Cuts a last line without its newline (a write interrupted by a kill)."""
    if not os.path.exists(self.path):
      return
    with open(self.path, "rb+") as f:
      data = f.read()
      if data and not data.endswith(b"\n"):
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())

  def append(self, record: TrialRecord) -> None:
    append_line(self.path, record.to_json())

  def read(self) -> list[TrialRecord]:
    return read_journal(self.path)


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline to the local file `path` and fsyncs it (see above)."""
  with open(path, "a") as f:
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_journal(path: str) -> list[TrialRecord]:
  """All complete records of the journal at `path` (none if it does not exist)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      if not line.endswith("\n"):
        break   # torn by a kill; the writer drops it on its next open
      if line.strip():
        records.append(TrialRecord.from_dict(json.loads(line)))
  return records
