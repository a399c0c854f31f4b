"""`run.py --mode=search`: `search.strategy` proxy (every trial trains a child) or oneshot
(`nasfpn_tf.search.oneshot`: supernet, controller, ASHA re-scoring)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from nasfpn_tf.configs.experiment import ExperimentConfig


def run_search_from_config(config: ExperimentConfig, model_dir: str,
                           ray_address: Optional[str] = None) -> list:
  """Runs (or resumes) `config.search` with the proxy reward built from `config`'s
  task and trainer sections; trials and reports go to `search.directory` (default
  MODEL_DIR/search). Prints the best architectures."""
  from nasfpn_tf.search.inline_engine import run_search_with_config
  from nasfpn_tf.search.rewards import make_proxy_reward

  if config.search.strategy == "oneshot":
    from nasfpn_tf.search.oneshot import run_oneshot_search
    return run_oneshot_search(config, model_dir, ray_address)
  search = config.search
  directory = search.directory or os.path.join(model_dir, "search")
  search = dataclasses.replace(search, directory=directory,
                               ray_address=ray_address or search.ray_address)
  reward = make_proxy_reward(config, os.path.join(directory, "children"))
  trials = run_search_with_config(search, reward)
  finished = sorted((t for t in trials if t.reward is not None), key=lambda t: -t.reward)
  print(f"{len(trials)} trials ({len(finished)} finished) in {directory}")
  for t in finished[:search.num_best]:
    print(f"reward {t.reward:.4f}  {t.spec.to_string()}")
  if search.baselines:
    score_baselines(search, reward, directory)
  return trials


def score_baselines(search, reward, directory: str) -> dict:
  """Scores `search.baselines` with the search's own reward (in this process) and writes
  DIRECTORY/baselines.json; a proxy reward stores each child's result, so a rerun after
  the search is resumed costs nothing."""
  from nasfpn_tf.architecture_spec import parse_spec
  from nasfpn_tf.search.reporting import atomic_write_text

  scores = {}
  for name in search.baselines:
    spec = parse_spec(name, search.min_level, search.max_level)
    scores[name] = {"reward": float(reward(spec)), "spec": spec.to_string()}
    print(f"baseline {name}: reward {scores[name]['reward']:.4f}")
  atomic_write_text(os.path.join(directory, "baselines.json"), json.dumps(scores, indent=1))
  return scores
