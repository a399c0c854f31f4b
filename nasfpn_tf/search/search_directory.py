"""Engine-agnostic bookkeeping of one search directory.

The `SearchDriver` is what the inline loop and the Ray searcher share: it hands
out proposals, journals every finished trial, runs an agent update after each
`batch_size` finished trials, checkpoints the agent right after, and writes the
reports. Nothing else holds state, so a search killed at any moment and started
again with the same directory continues where the files say:

* the latest checkpoint gives the agent (controller weights, Adam slots,
  baseline) and the number of journal lines already used by updates;
* the journal lines after those are finished trials awaiting the next update;
* proposals that were in flight are simply proposed again.

The directory is on a local (or mounted) disk: the journal's appends are fsynced,
which `tf.io.gfile` cannot do (journal.py). Every other file is written through
`nasfpn_tf.file_io` (a temporary name, then a rename).

Directory layout:
  search.json            the settings that must not change between restarts
  trials.jsonl           the journal (one finished trial per line)
  checkpoints/ckpt-N/    agent after update N (+ search_state.json)
  events.jsonl           starts and resumes (with a digest of the restored weights)
  best_1.yaml ...        the best architectures, loadable by `parse_spec`
  search_progress.png    reward / moving average / unique architectures per trial
  best_architecture.png  drawing of the best one (when nasfpn_tf.visualize exists)
  tensorboard/           scalars: reward, baseline, entropy, loss, unique architectures
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Optional

import numpy as np

from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.configs.search_config import SearchConfig
from nasfpn_tf.search import reporting
from nasfpn_tf.search.agents import Proposal, make_agent
from nasfpn_tf.search.checkpoint import CheckpointStore
from nasfpn_tf.search.journal import STATUS_FAILED, STATUS_OK, Journal, TrialRecord, append_line
from nasfpn_tf.search.search_space import SearchSpace

logger = logging.getLogger(__name__)

JOURNAL_FILE = "trials.jsonl"
SETTINGS_FILE = "search.json"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_DIR = "checkpoints"
# Reports (plot, best specs) are refreshed at most this often during a search.
_REPORT_INTERVAL_S = 30.0


def _fixed_settings(config: SearchConfig) -> dict[str, Any]:
  """Settings a restarted search must share with the first run of a directory."""
  return {"algorithm": config.algorithm, "seed": config.seed, "num_cells": config.num_cells,
          "min_level": config.min_level, "max_level": config.max_level,
          "controller": dataclasses.asdict(config.controller)}


def weights_digest(agent: Any) -> Optional[str]:
  """SHA-256 of the controller weights (None for agents without weights)."""
  controller = getattr(agent, "controller", None)
  if controller is None:
    return None
  h = hashlib.sha256()
  for w in controller.get_state():
    h.update(np.ascontiguousarray(w).tobytes())
  return h.hexdigest()


class SearchDriver:
  """Proposals, journal, updates, checkpoints and reports of one search.

  Args:
    config: the search settings; `config.directory` is created if needed.
  """

  def __init__(self, config: SearchConfig):
    from nasfpn_tf import file_io  # local: file_io imports TensorFlow (Ray workers import this)

    if not config.directory:
      raise ConfigError("directory", "a search needs a directory for its journal and checkpoints")
    self.config = config
    self.directory = os.path.abspath(os.path.expanduser(config.directory))
    file_io.makedirs(self.directory)
    self._check_settings()
    self.space = SearchSpace(config.num_cells, config.min_level, config.max_level)
    self.agent = make_agent(config.algorithm, self.space, config.controller, config.ppo,
                            config.seed)
    self.store = CheckpointStore(os.path.join(self.directory, CHECKPOINT_DIR))
    self.journal = Journal(os.path.join(self.directory, JOURNAL_FILE))
    self.records: list[TrialRecord] = []
    self.pending: list[TrialRecord] = []
    self.in_flight: dict[int, tuple[Proposal, float]] = {}
    self.last_stats: dict[str, float] = {}
    self._finished_proposals: set[int] = set()
    self._round = 0
    self._round_start = 0
    self._next_proposal = 0
    self._last_report = time.time()
    self._progbar = None
    self._summary_writer = None
    self._best: Optional[float] = None
    self._unique_specs: set[str] = set()
    self._resume()

  # ---- start / resume -------------------------------------------------------

  def _check_settings(self) -> None:
    from nasfpn_tf import file_io

    path = os.path.join(self.directory, SETTINGS_FILE)
    wanted = _fixed_settings(self.config)
    if file_io.exists(path):
      stored = json.loads(file_io.read_text(path))
      for key, value in wanted.items():
        if stored.get(key) != value:
          raise ConfigError(key, f"{self.directory} holds a search with {key}={stored.get(key)!r}, "
                            f"this run asks for {value!r}; use another directory")
      return
    file_io.write_json(path, wanted, indent=1)

  def _resume(self) -> None:
    meta = self.store.restore(self.agent) or {}
    self.records = self.journal.read()
    consumed = int(meta.get("trials_consumed", 0))
    if consumed > len(self.records):
      raise RuntimeError(f"checkpoint {self.store.latest()} used {consumed} trials but the "
                         f"journal holds only {len(self.records)}: the journal was edited")
    self.pending = self.records[consumed:]
    for rec in self.records:
      self._note_reward(rec)
    self._finished_proposals = {r.proposal for r in self.records}
    self._round = int(meta.get("round", 0))
    self._round_start = int(meta.get("round_start", 0))
    self._next_proposal = max([int(meta.get("next_proposal", 0))]
                              + [r.proposal + 1 for r in self.records])
    self._log_event("resume" if (meta or self.records) else "start",
                    checkpoint=self.store.latest(), round=self._round,
                    trials=len(self.records), weights_digest=weights_digest(self.agent))
    if self.records:
      logger.info("resuming %s: %d finished trials, %d updates", self.directory,
                  len(self.records), self._round)
    if len(self.pending) >= self.config.batch_size:
      self.update()   # killed between the batch's last journal line and its update

  def _log_event(self, event: str, **fields: Any) -> None:
    entry = {"event": event, "time": time.time(), "pid": os.getpid(), **fields}
    append_line(os.path.join(self.directory, EVENTS_FILE), json.dumps(entry))

  # ---- proposals ------------------------------------------------------------

  @property
  def num_finished(self) -> int:
    return len(self.records)

  @property
  def done(self) -> bool:
    """All `max_trials` finished, or a trial reached `stop_reward`."""
    if len(self.records) >= self.config.max_trials:
      return True
    best = self._best_reward()
    return (self.config.stop_reward is not None and best is not None
            and best >= self.config.stop_reward)

  def propose_round(self) -> list[Proposal]:
    """The unfinished proposals of the current round (inline engine).

    A round is `batch_size` consecutive proposal ids sampled with the same
    weights; after a restart it holds exactly the ids the journal lacks.
    """
    consumed = len(self.records) - len(self.pending)
    size = min(self.config.batch_size, self.config.max_trials - consumed)
    ids = [i for i in range(self._round_start, self._round_start + size)
           if i not in self._finished_proposals]
    self._next_proposal = max(self._next_proposal, self._round_start + size)
    proposals = self.agent.propose(ids)
    for p in proposals:
      self.in_flight[p.index] = (p, time.time())
    return proposals

  def propose_next(self) -> Proposal:
    """One fresh proposal (Ray engine: trials are suggested one at a time)."""
    (proposal,) = self.agent.propose([self._next_proposal])
    self._next_proposal += 1
    self.in_flight[proposal.index] = (proposal, time.time())
    return proposal

  def restore_in_flight(self, proposals: list[Proposal]) -> None:
    """Re-registers proposals handed out before a restart (Ray `Tuner.restore`)."""
    for p in proposals:
      if p.index not in self._finished_proposals:
        self.in_flight[p.index] = (p, time.time())
        self._next_proposal = max(self._next_proposal, p.index + 1)

  # ---- results ----------------------------------------------------------------

  def record(self, proposal: Proposal, reward: Optional[float],
             start_time: Optional[float] = None, end_time: Optional[float] = None,
             error: Optional[str] = None) -> Optional[TrialRecord]:
    """Journals a finished trial; runs an update when the batch is full.

    Args:
      proposal: what was evaluated.
      reward: its reward, or None if the trial failed.
      start_time, end_time: wall-clock times (defaults: hand-out time, now).
      error: why it failed.

    Returns:
      The record, or None if this proposal was already recorded (a duplicate).
    """
    if proposal.index in self._finished_proposals:
      return None
    _, handed_out = self.in_flight.pop(proposal.index, (None, time.time()))
    start_time = handed_out if start_time is None else start_time
    end_time = time.time() if end_time is None else end_time
    if reward is not None and not math.isfinite(reward):
      reward, error = None, f"reward is {reward}"
    status = STATUS_OK if reward is not None else STATUS_FAILED
    rec = TrialRecord(
        trial=len(self.records), proposal=proposal.index, status=status,
        reward=None if reward is None else float(reward), wall_time_s=end_time - start_time,
        start_time=start_time, end_time=end_time, cells=proposal.spec.to_records(),
        spec_string=proposal.spec.to_string(), min_level=self.space.min_level,
        max_level=self.space.max_level, actions=list(proposal.actions),
        log_prob=float(proposal.log_prob), policy_version=proposal.policy_version,
        error=error if status == STATUS_FAILED else None)
    self.journal.append(rec)
    self.records.append(rec)
    self.pending.append(rec)
    self._finished_proposals.add(proposal.index)
    self._note_reward(rec)
    self._on_trial(rec)
    if len(self.pending) >= self.config.batch_size:
      self.update()
    elif time.time() - self._last_report > _REPORT_INTERVAL_S:
      self.write_reports()
    return rec

  def update(self) -> dict[str, float]:
    """Agent update on the pending successful trials, then an atomic checkpoint."""
    ok = [r for r in self.pending if r.ok]
    stats = self.agent.update([(r.actions, r.log_prob, r.reward) for r in ok]) if ok else {}
    self.pending = []
    self._round += 1
    self._round_start = self._next_proposal
    meta = {"trials_consumed": len(self.records), "round": self._round,
            "round_start": self._round_start, "next_proposal": self._next_proposal}
    self.store.save(self.agent, self._round, meta)
    self.last_stats = stats
    self._on_update(stats)
    if time.time() - self._last_report > _REPORT_INTERVAL_S:
      self.write_reports()
    return stats

  def finish(self) -> list[TrialRecord]:
    """Uses a last partial batch, writes the reports; returns all finished trials in order."""
    if any(r.ok for r in self.pending):
      self.update()
    self.write_reports()
    if self._summary_writer is not None:
      self._summary_writer.flush()
    return list(self.records)

  def write_reports(self) -> dict[str, object]:
    self._last_report = time.time()
    return reporting.write_reports(self.records, self.directory, self.config.num_best)

  # ---- progress bar and TensorBoard ----------------------------------------------

  def _best_reward(self) -> Optional[float]:
    return self._best

  def _note_reward(self, rec: TrialRecord) -> None:
    self._unique_specs.add(rec.spec_string)
    if rec.ok and (self._best is None or rec.reward > self._best):
      self._best = rec.reward

  def _on_trial(self, rec: TrialRecord) -> None:
    if self.config.progress_bar:
      if self._progbar is None:
        import keras
        self._progbar = keras.utils.Progbar(self.config.max_trials, unit_name="trial",
                                            stateful_metrics=["reward", "best"])
      best = self._best_reward()
      values = [("reward", rec.reward if rec.ok else float("nan"))]
      if best is not None:
        values.append(("best", best))
      self._progbar.update(len(self.records), values)
    if rec.ok:
      self._scalars({"trial/reward": rec.reward, "trial/wall_time_s": rec.wall_time_s})

  def _on_update(self, stats: dict[str, float]) -> None:
    scalars = {f"agent/{k}": v for k, v in stats.items() if v is not None}
    scalars["search/unique_architectures"] = float(len(self._unique_specs))
    best = self._best_reward()
    if best is not None:
      scalars["search/best_reward"] = best
    scalars["search/failed_trials"] = float(sum(not r.ok for r in self.records))
    self._scalars(scalars)

  def _scalars(self, values: dict[str, float]) -> None:
    if not self.config.tensorboard:
      return
    import tensorflow as tf
    if self._summary_writer is None:
      self._summary_writer = tf.summary.create_file_writer(
          os.path.join(self.directory, "tensorboard"))
    with self._summary_writer.as_default(step=len(self.records)):
      for name, value in values.items():
        tf.summary.scalar(name, float(value))
