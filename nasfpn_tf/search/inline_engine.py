"""`run_search`, the entry point of a search for both engines, and the inline engine.

  engine="inline"  `run_inline` here: trials run in this process, one after another
                   (cheap rewards, debugging, a single accelerator).
  engine="ray"     `ray_engine.run_ray_search`: trials run as Ray Tune function
                   trainables, `max_concurrent` at a time, with per-trial resources,
                   a time limit and retries.

Both engines share `SearchDriver` (search_directory.py), so a search directory
started with one can be continued with the other.

Example:
  from nasfpn_tf.search import run_search, SearchSpace, SimilarityReward
  reward = SimilarityReward(SearchSpace(), floor=0.89, seed=0)
  trials = run_search(reward, max_trials=500, directory="/tmp/search")
  print(max(t.reward for t in trials if t.ok))
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, Optional

from nasfpn_tf.architecture_spec import ArchitectureSpec
from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.configs.search_config import ControllerConfig, PPOConfig, SearchConfig
from nasfpn_tf.search.search_directory import SearchDriver
from nasfpn_tf.search.journal import TrialRecord

logger = logging.getLogger(__name__)

RewardFn = Callable[[ArchitectureSpec], float]


def make_search_config(max_trials: int, directory: str, algorithm: str = "ppo", seed: int = 0,
                       engine: str = "inline", batch_size: Optional[int] = None,
                       **search_options: Any) -> SearchConfig:
  """A validated `SearchConfig` from keyword arguments.

  `search_options` are the other `SearchConfig` fields; `ppo` and `controller`
  may be dicts of just the settings to change.
  """
  known = {f.name for f in dataclasses.fields(SearchConfig)}
  unknown = sorted(set(search_options) - known)
  if unknown:
    raise ConfigError(unknown[0], f"unknown search option (known: {sorted(known)})")
  options = dict(search_options)
  for key, cls in (("ppo", PPOConfig), ("controller", ControllerConfig)):
    if isinstance(options.get(key), Mapping):
      try:
        options[key] = cls(**options[key])
      except TypeError as e:
        raise ConfigError(key, str(e)) from None
      except ConfigError as e:
        raise e.prefixed(key) from None
  if batch_size is not None:
    options["batch_size"] = batch_size
  return SearchConfig(algorithm=algorithm, engine=engine, max_trials=max_trials,
                      directory=directory, seed=seed, **options)


def run_search(reward_fn: RewardFn, max_trials: int, directory: str, algorithm: str = "ppo",
               seed: int = 0, engine: str = "inline", batch_size: Optional[int] = None,
               **search_options: Any) -> list[TrialRecord]:
  """Runs (or continues) an architecture search and returns its finished trials.

  Args:
    reward_fn: spec -> float, higher is better (e.g. `make_proxy_reward(...)`).
      An exception marks the trial as failed; it gets no reward and the search
      goes on. For `engine="ray"` it must be picklable.
    max_trials: stop after this many finished trials (successful or failed),
      counting those of earlier runs in the same directory.
    directory: journal, checkpoints, best specs, plot; starting again with the
      same directory continues the search.
    algorithm: "ppo" (the NAS-FPN controller) or "random".
    seed: seeds the controller's weights and every sampling stream.
    engine: "inline" or "ray".
    batch_size: finished trials per controller update (default: SearchConfig's).
    **search_options: any other `SearchConfig` field (`ppo={...}`, `controller={...}`,
      `max_concurrent`, `trial_cpus`, `trial_gpus`, `trial_time_limit_s`,
      `max_failures`, `ray_address`, `ray_num_cpus`, `num_cells`, `progress_bar`, ...).

  Returns:
    All finished trials of the directory in order (`TrialRecord`: `.spec`,
    `.reward`, `.wall_time_s`, `.status`, ...).
  """
  config = make_search_config(max_trials, directory, algorithm, seed, engine, batch_size,
                              **search_options)
  return run_search_with_config(config, reward_fn)


def run_search_with_config(config: SearchConfig, reward_fn: RewardFn) -> list[TrialRecord]:
  """`run_search` for a ready `SearchConfig` (e.g. `ExperimentConfig.search`)."""
  if config.engine == "ray":
    from nasfpn_tf.search.ray_engine import run_ray_search   # keeps ray an optional import
    return run_ray_search(config, reward_fn)
  return run_inline(config, reward_fn)


def evaluate(reward_fn: RewardFn, spec: ArchitectureSpec) -> tuple[Optional[float], Optional[str]]:
  """Calls `reward_fn`; a raised exception becomes `(None, "Type: message")`."""
  try:
    return float(reward_fn(spec)), None
  except Exception as e:   # any failure of a trial is recorded, never fatal to the search
    logger.warning("trial failed: %s: %s", type(e).__name__, e)
    return None, f"{type(e).__name__}: {e}"


def run_inline(config: SearchConfig, reward_fn: RewardFn) -> list[TrialRecord]:
  """Runs the trials of a search in this process, one after another.

  A raising trial is recorded as failed. There is no time limit or retry here
  (a hung `reward_fn` cannot be stopped from inside the process): use
  `engine="ray"` with `trial_time_limit_s` and `max_failures` for those.
  """
  driver = SearchDriver(config)
  while not driver.done:
    proposals = driver.propose_round()
    if not proposals:   # the round was finished by another engine's run: start the next
      driver.update()
      continue
    for proposal in proposals:
      start = time.time()
      reward, error = evaluate(reward_fn, proposal.spec)
      driver.record(proposal, reward, start, time.time(), error)
      if driver.done:   # stop_reward reached mid-round
        break
  return driver.finish()
