"""The Ray Tune function trainable that evaluates one architecture.

Kept free of TensorFlow (and of the controller), because every trial runs in a
fresh Ray worker that imports this module: the reward function alone decides
what else gets loaded there.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from nasfpn_tf.architecture_spec import ArchitectureSpec, from_records
from nasfpn_tf.search.journal import read_journal


class TrialTimeoutError(TimeoutError):
  """A trial ran past `trial_time_limit_s`."""


def call_with_time_limit(fn: Callable[[ArchitectureSpec], float], spec: ArchitectureSpec,
                         time_limit_s: float) -> float:
  """`fn(spec)`, raising `TrialTimeoutError` after `time_limit_s` seconds (0: no limit).

  The call runs in a daemon thread; when the limit passes, the trial raises and
  Tune stops its worker process, which ends the thread with it.
  """
  if not time_limit_s:
    return float(fn(spec))
  box: dict[str, Any] = {}

  def target():
    try:
      box["value"] = float(fn(spec))
    except BaseException as e:   # re-raised in the trial's own thread below
      box["error"] = e

  worker = threading.Thread(target=target, name="nasfpn-trial", daemon=True)
  worker.start()
  worker.join(time_limit_s)
  if worker.is_alive():
    raise TrialTimeoutError(f"trial ran past its time limit of {time_limit_s:g} s")
  if "error" in box:
    raise box["error"]
  return box["value"]


def _journaled_reward(journal_path: str, proposal: int) -> Optional[dict[str, Any]]:
  """The journal's result for `proposal`, if it finished before a restore re-ran it."""
  try:
    records = read_journal(journal_path)
  except OSError:   # another node: no shared journal, evaluate again
    return None
  for r in records:
    if r.proposal == proposal and r.ok:
      return {"reward": r.reward, "start_time": r.start_time, "end_time": r.end_time,
              "wall_time_s": r.wall_time_s}
  return None


def nasfpn_trial(config: dict[str, Any], reward_fn: Callable[[ArchitectureSpec], float] = None,
                 time_limit_s: float = 0.0, journal_path: str = "") -> None:
  """Evaluates the architecture in `config` and reports `reward` (plus timings) to Tune.

  Args:
    config: what the searcher suggested: `proposal`, `cells`, `min_level`, `max_level`.
    reward_fn: spec -> float (bound with `tune.with_parameters`).
    time_limit_s: per-trial limit (0: none).
    journal_path: the search journal; a proposal already in it is not evaluated again
      (a trial that finished just before a kill and that `Tuner.restore` re-runs).
  """
  from ray import tune

  proposal = int(config["proposal"])
  if journal_path:
    done = _journaled_reward(journal_path, proposal)
    if done is not None:
      tune.report({**done, "proposal": proposal, "replayed": True})
      return
  spec = from_records(config["cells"], config["min_level"], config["max_level"])
  start = time.time()
  reward = call_with_time_limit(reward_fn, spec, time_limit_s)
  end = time.time()
  tune.report({"reward": reward, "proposal": proposal, "start_time": start, "end_time": end,
               "wall_time_s": end - start, "replayed": False})
