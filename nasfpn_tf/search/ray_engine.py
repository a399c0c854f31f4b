"""The Ray Tune engine: the trial trainable, a `Searcher` wrapping the agent, `run_ray_search`.

`ControllerSearcher.suggest` samples an architecture (its log-probability is
kept for PPO); each finished trial is journaled as soon as its reward arrives;
the agent is updated (and checkpointed) after every `batch_size` finished
trials. `ConcurrencyLimiter(searcher, max_concurrent=k, batch=True)` starts k
trials together and waits for all of them before sampling again, so each batch
is sampled with fresh weights. A trial that raises, or runs past its time
limit, is retried `max_failures` times (Tune's FailureConfig) and then recorded
as failed, with no reward; it never blocks the search.

Restarting `run_search(engine="ray")` with the same directory starts a new Tune
run that continues from the directory's checkpoint and journal. `Tuner.restore`
of a run also works: the searcher's `save`/`restore` keep the in-flight
proposals, its agent is rebuilt from the directory, and the trainable returns
the journaled reward of any trial that had already finished.

Ray is imported only here, only when `engine="ray"` is asked for. Each trial's
fresh Ray worker imports this module to unpickle `nasfpn_trial`, so it must stay
free of TensorFlow at import (the driver side builds the controller lazily): the
reward function alone decides what else gets loaded in a worker.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import threading
import time
from typing import Any, Callable, Optional

from nasfpn_tf.architecture_spec import ArchitectureSpec, from_records
from nasfpn_tf.configs.loading import from_dict
from nasfpn_tf.configs.search_config import SearchConfig
from nasfpn_tf.search.agents import Proposal
from nasfpn_tf.search.journal import TrialRecord, read_journal
from nasfpn_tf.search.search_directory import JOURNAL_FILE, SearchDriver

logger = logging.getLogger(__name__)


def import_ray():
  """`(ray, ray.tune)`, or an ImportError that says how to install them."""
  try:
    import ray
    from ray import tune
  except ImportError as e:
    raise ImportError("engine='ray' needs Ray Tune, which is not installed: "
                      "pip install nasfpn_tf[search]") from e
  return ray, tune


ray, tune = import_ray()
from ray.tune.search import ConcurrencyLimiter, Searcher  # noqa: E402  (after the friendly check)


# ---- the trainable (runs in the trial's worker) ----------------------------------

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


# ---- the searcher (runs in the driver process) ----------------------------------

def _proposal_to_dict(p: Proposal) -> dict[str, Any]:
  return {"index": p.index, "cells": p.spec.to_records(), "min_level": p.spec.min_level,
          "max_level": p.spec.max_level, "actions": list(p.actions), "log_prob": p.log_prob,
          "policy_version": p.policy_version}


def _proposal_from_dict(d: dict[str, Any]) -> Proposal:
  return Proposal(d["index"], from_records(d["cells"], d["min_level"], d["max_level"]),
                  list(d["actions"]), float(d["log_prob"]), int(d["policy_version"]))


class ControllerSearcher(Searcher):
  """A Tune `Searcher` that proposes architectures with the search agent.

  Args:
    config: the search settings (its directory holds journal and checkpoints).
    metric: the reported metric that is the reward.
  """

  def __init__(self, config: SearchConfig, metric: str = "reward"):
    super().__init__(metric=metric, mode="max")
    self.search_config = config
    self._driver: Optional[SearchDriver] = None
    self._proposals: dict[str, Proposal] = {}   # Tune trial id -> proposal in flight
    # Set by `FailureJournal`, which records failures with their exception message.
    self.failures_by_callback = False

  @property
  def driver(self) -> SearchDriver:
    """Created on first use (in Tune's driver process), from the search directory."""
    if self._driver is None:
      self._driver = SearchDriver(self.search_config)
      self._driver.restore_in_flight(list(self._proposals.values()))
    return self._driver

  def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
    d = self.driver
    if d.done or d.num_finished + len(d.in_flight) >= self.search_config.max_trials:
      return Searcher.FINISHED
    p = d.propose_next()
    self._proposals[trial_id] = p
    return {"proposal": p.index, "cells": p.spec.to_records(),
            "min_level": p.spec.min_level, "max_level": p.spec.max_level}

  def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
    # Journal right away: with batch=True the limiter holds completions back
    # until the whole batch is done, and a kill before then must not lose this one.
    if self.metric in result:
      self._record_success(trial_id, result)

  def on_trial_complete(self, trial_id: str, result: Optional[dict[str, Any]] = None,
                        error: bool = False) -> None:
    if error and self.failures_by_callback:
      return   # FailureJournal.on_trial_error records it, with the exception's message
    if not error and result and self.metric in result:
      self._record_success(trial_id, result)
    elif error:
      self.record_failure(trial_id, "trial raised (see its error.txt in the Tune run)")
    else:
      self.record_failure(trial_id, f"trial ended without reporting '{self.metric}'")
    self._proposals.pop(trial_id, None)

  def _record_success(self, trial_id: str, result: dict[str, Any]) -> None:
    p = self._proposals.get(trial_id)
    if p is not None:
      self.driver.record(p, float(result[self.metric]), result.get("start_time"),
                         result.get("end_time"))

  def record_failure(self, trial_id: str, message: str) -> Optional[TrialRecord]:
    """Journals a failed trial (a no-op if it is unknown or already journaled)."""
    p = self._proposals.pop(trial_id, None)
    if p is None:
      return None
    return self.driver.record(p, None, error=message)

  # Tune pickles the search algorithm with the Tuner: leave the TensorFlow agent out.
  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_driver"] = None
    state["failures_by_callback"] = False   # the callback's link is not pickled either
    state["_proposals"] = {k: _proposal_to_dict(p) for k, p in self._proposals.items()}
    state["search_config"] = dataclasses.asdict(self.search_config)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    state = dict(state)
    state["search_config"] = from_dict(SearchConfig, state["search_config"])
    state["_proposals"] = {k: _proposal_from_dict(d) for k, d in state["_proposals"].items()}
    self.__dict__.update(state)

  def get_state(self) -> dict[str, Any]:
    return {"proposals": {k: _proposal_to_dict(p) for k, p in self._proposals.items()},
            "directory": self.search_config.directory}

  def set_state(self, state: dict[str, Any]) -> None:
    """Restores in-flight proposals; the agent itself reloads from the directory."""
    self._proposals = {k: _proposal_from_dict(d) for k, d in state["proposals"].items()}
    self._driver = None

  def save(self, checkpoint_path: str) -> None:
    from nasfpn_tf import file_io  # local: file_io imports TensorFlow, which workers must not

    file_io.write_bytes(checkpoint_path, pickle.dumps(self.get_state()))

  def restore(self, checkpoint_path: str) -> None:
    with open(checkpoint_path, "rb") as f:
      self.set_state(pickle.load(f))


class FailureJournal(tune.Callback):
  """Journals a failed trial, with its exception, as soon as Tune gives up on it.

  The concurrency limiter (batch=True) tells the searcher only when the whole
  batch is done, and without the error; this callback hears of it at once and
  reads the trial's error file.
  """

  def __init__(self, searcher: ControllerSearcher):
    self.searcher = searcher
    searcher.failures_by_callback = True

  def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
    if self.searcher is not None:
      self.searcher.record_failure(trial.trial_id, _error_summary(trial))

  def __getstate__(self) -> dict[str, Any]:
    return {"searcher": None}   # a restored Tuner journals failures through the searcher


def _error_summary(trial: Any) -> str:
  path = getattr(trial, "error_file", None)
  return _last_line(path) if path else "trial failed"


def _last_line(path: str) -> str:
  """The last line of a Tune error file: the exception, e.g. "RuntimeError: ..."."""
  try:
    with open(path) as f:
      lines = [ln.strip() for ln in f if ln.strip()]
  except OSError:
    return "trial failed"
  return lines[-1][:500] if lines else "trial failed"


def init_ray(config: SearchConfig) -> bool:
  """Starts or joins Ray; returns True if this call started it (and must shut it down)."""
  if ray.is_initialized():
    return False
  if config.ray_address:
    ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=True)
    return True
  # Local workers must import nasfpn_tf from wherever this process does. Passing it
  # in the environment the local cluster inherits (rather than a runtime_env) lets
  # Ray hand trials to its pre-started workers: each trial is a new actor.
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  saved = os.environ.get("PYTHONPATH")
  os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, saved) if p)
  try:
    ray.init(num_cpus=config.ray_num_cpus, include_dashboard=False)
  finally:   # the cluster has inherited it; leave this process as it was
    if saved is None:
      del os.environ["PYTHONPATH"]
    else:
      os.environ["PYTHONPATH"] = saved
  return True


def _next_run_name(storage: str) -> str:
  k = 0
  while os.path.exists(os.path.join(storage, f"tune-{k}")):
    k += 1
  return f"tune-{k}"


def build_tuner(config: SearchConfig, reward_fn: Callable[[ArchitectureSpec], float],
                searcher: ControllerSearcher, num_samples: int):
  """The `tune.Tuner` of one run of the search (a fresh Tune experiment)."""
  directory = searcher.driver.directory
  trainable = tune.with_parameters(nasfpn_trial, reward_fn=reward_fn,
                                   time_limit_s=config.trial_time_limit_s,
                                   journal_path=os.path.join(directory, JOURNAL_FILE))
  trainable = tune.with_resources(trainable, {"cpu": config.trial_cpus, "gpu": config.trial_gpus})
  from nasfpn_tf import file_io

  storage = os.path.join(directory, "ray")
  file_io.makedirs(storage)
  return tune.Tuner(
      trainable,
      tune_config=tune.TuneConfig(
          search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.max_concurrent, batch=True),
          num_samples=num_samples, reuse_actors=False,
          trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
      run_config=tune.RunConfig(
          name=_next_run_name(storage), storage_path=storage, verbose=0,
          failure_config=tune.FailureConfig(max_failures=config.max_failures),
          callbacks=[FailureJournal(searcher)]))


def run_ray_search(config: SearchConfig, reward_fn: Callable[[ArchitectureSpec], float]
                   ) -> list[TrialRecord]:
  """Runs (or continues) the search with Ray Tune; returns all finished trials in order."""
  started = init_ray(config)
  try:
    searcher = ControllerSearcher(config)
    remaining = config.max_trials - searcher.driver.num_finished
    if remaining > 0:
      build_tuner(config, reward_fn, searcher, remaining).fit()
    return searcher.driver.finish()
  finally:
    if started:
      ray.shutdown()
