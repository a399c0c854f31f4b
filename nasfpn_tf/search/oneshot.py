"""The one-shot search: supernet -> controller -> ASHA re-scoring -> the winner.

  python run.py --mode=search --config_file=configs/search_shapes_oneshot.yaml --model_dir=DIR

Stages (each resumable: rerun the same command after a kill):
1. `DIR/search/supernet/`: a `NasFpnSupernet` RetinaNet of the shape of
   `task.model`, trained by the ordinary trainer (backups, TensorBoard, progress)
   for `search.oneshot.supernet_steps` steps, one uniformly sampled path per step.
   Once `model.keras` is there it is loaded, not trained again.
2. `DIR/search/`: the controller (PPO) runs `search.max_trials` trials, each
   scored by `OneShotReward` (the path's AP on the held-out split with
   recalibrated batch norm), journaled as in the proxy search. The reward is
   deterministic, so an architecture sampled again (a converging controller
   does that most of the time) reuses its score, journaled ones included.
3. `DIR/search/rescore/`: the `rescore_top_k` best distinct architectures are
   trained as stand-alone children with the proxy budget (`trainer`) under Ray
   Tune's ASHA scheduler (`rescore_seeds` children per architecture, ranked by their
   mean); the best is the winner, written to
   `DIR/search/best_1.yaml` (then the other children in their order).
`DIR/search/summary.json` gathers the stages' results and wall times.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.configs.experiment import ExperimentConfig

SUPERNET_DIR = "supernet"
RESCORE_DIR = "rescore"
SUMMARY_FILE = "summary.json"


def supernet_config(config: ExperimentConfig) -> ExperimentConfig:
  """`config` with the decoder made a supernet and the trainer stretched to supernet_steps.

  `runtime.mixed_precision_dtype: auto` trains the supernet in float32: under bfloat16 its
  training graph (one `switch_case` branch per choice of every cell, whose gradient keeps the
  intermediates of all branches, now with their casts) peaked at 17.5 GB and held 10.6 GB on
  search_shapes_oneshot.yaml, against 3.6 GB in float32 (RSS sampled every 15 s over its
  first 200-500 steps on the 2-core AMX machine), and was OOM-killed beside other jobs on a
  24 GB machine. An explicit `bfloat16` is kept.
  """
  from nasfpn_tf.configs.loading import override

  s, t = config.search, config.trainer
  steps = s.oneshot.supernet_steps
  interval = lambda value: min(value, steps)
  precision = config.runtime.mixed_precision_dtype
  return override(config, {
      "task": {"model": {"decoder": {"type": "nasfpn_supernet", "num_cells": s.num_cells}}},
      "trainer": {"train_steps": steps, "validation_interval": interval(t.validation_interval),
                  "checkpoint_interval": interval(t.checkpoint_interval),
                  "backup_interval": interval(t.backup_interval)},
      "runtime": {"mixed_precision_dtype": "float32" if precision == "auto" else precision}})


def train_supernet(config: ExperimentConfig, directory: str, verbose: int = 1):
  """Trains (or resumes, or loads the finished) supernet of `config` in `directory`."""
  import keras

  from nasfpn_tf import file_io
  from nasfpn_tf.trainer import MODEL_FILE, train

  path = os.path.join(directory, MODEL_FILE)
  if file_io.exists(path):
    return keras.saving.load_model(path, compile=False)
  return train(supernet_config(config), directory, verbose=verbose).model


def make_oneshot_reward(config: ExperimentConfig, model: Any):
  """The `OneShotReward` of a trained supernet on `config`'s data.

  Calibration batches come from a deterministic (seeded-order) training pipeline,
  so every process scores with the same batches.
  """
  from nasfpn_tf.configs.loading import override
  from nasfpn_tf.data.input_pipeline import build_dataset
  from nasfpn_tf.search.rewards import OneShotReward, cached_batches
  from nasfpn_tf.trainer import ground_truth

  oneshot = config.search.oneshot
  train = override(config, {"task": {"train_data": {"deterministic": True}}}).task.train_data
  train_ds, _ = build_dataset(train, config.task.model)
  calibration = [images for images, _ in cached_batches(train_ds, oneshot.calibration_batches)]
  val = config.task.validation_data
  eval_ds, info = build_dataset(val, config.task.model)
  eval_batches = [(images, labels["image_id"].numpy(), labels["image_info"].numpy())
                  for images, labels in cached_batches(eval_ds, oneshot.eval_batches)]
  return OneShotReward(model, calibration, eval_batches, ground_truth(val, info))


def reuse_journaled_rewards(reward: Any, directory: str) -> int:
  """Puts the scores journaled in the search `directory` into `reward.cache`.

  `OneShotReward` memoises by spec within a process; seeding the memo from the
  journal extends that across a restart, so an architecture scored before a kill
  is not scored again when the controller samples it once more.

  Args:
    reward: a `OneShotReward` (anything with a `cache` dict spec string -> reward).
    directory: the search directory (its `trials.jsonl`).

  Returns:
    How many distinct architectures were added.
  """
  from nasfpn_tf.search.journal import read_journal
  from nasfpn_tf.search.search_directory import JOURNAL_FILE

  added = 0
  for record in read_journal(os.path.join(directory, JOURNAL_FILE)):
    if record.ok and record.spec_string not in reward.cache:
      reward.cache[record.spec_string] = float(record.reward)
      added += 1
  return added


def _write_json(path: str, data: dict) -> None:
  from nasfpn_tf import file_io  # local: file_io imports TensorFlow
  file_io.write_json(path, data, indent=1)


def run_oneshot_search(config: ExperimentConfig, model_dir: str,
                       ray_address: Optional[str] = None) -> dict[str, Any]:
  """Runs (or resumes) the three stages; returns the summary (also in summary.json)."""
  from nasfpn_tf import file_io
  from nasfpn_tf.search.inline_engine import run_search_with_config
  from nasfpn_tf.search.reporting import best_trials, write_ranked_specs

  search = config.search
  directory = os.path.abspath(search.directory or os.path.join(model_dir, "search"))
  file_io.makedirs(directory)
  summary: dict[str, Any] = {"strategy": "oneshot", "stages": {}}

  start = time.time()
  print(f"[1/3] supernet: {search.oneshot.supernet_steps} steps -> "
        f"{os.path.join(directory, SUPERNET_DIR)}")
  model = train_supernet(config, os.path.join(directory, SUPERNET_DIR))
  summary["stages"]["supernet"] = {"wall_time_s": time.time() - start}

  start = time.time()
  reward = make_oneshot_reward(config, model)
  reused = reuse_journaled_rewards(reward, directory)
  controller = dataclasses.replace(search, directory=directory, engine="inline")
  print(f"[2/3] controller: {search.max_trials} trials scored by the supernet -> {directory}")
  trials = run_search_with_config(controller, reward)
  top = best_trials(trials, max(search.num_best, search.oneshot.rescore_top_k))
  baselines = {}
  for name in search.baselines:
    spec = parse_spec(name, search.min_level, search.max_level)
    if len(spec.cells) == search.num_cells:   # only specs of the supernet's shape have a path
      baselines[name] = reward(spec)
  summary["stages"]["controller"] = {
      "wall_time_s": time.time() - start, "trials": len(trials),
      "unique_architectures": len({t.spec_string for t in trials}),
      "unique_architectures_last_200": len({t.spec_string for t in trials[-200:]}),
      "reused_journaled_rewards": reused,
      "top": [{"spec": t.spec_string, "oneshot_reward": t.reward} for t in top],
      "baselines_oneshot_reward": baselines}

  k = search.oneshot.rescore_top_k
  winners = [{"spec": t.spec_string, "reward": t.reward, "source": "oneshot"} for t in top]
  if k:
    from nasfpn_tf.search.rescore import rescore
    start = time.time()
    seeds = search.oneshot.rescore_seeds
    print(f"[3/3] re-scoring the top {k} with the stand-alone proxy"
          f"{f' (mean of {seeds} seeds)' if seeds > 1 else ''} under ASHA -> "
          f"{os.path.join(directory, RESCORE_DIR)}")
    rows = rescore(config, [t.spec for t in top[:k]], os.path.join(directory, RESCORE_DIR),
                   ray_address)
    summary["stages"]["rescore"] = {"wall_time_s": time.time() - start, "rows": rows}
    winners = [{"spec": r["spec"], "reward": r["AP"], "source": "proxy"} for r in rows
               if r["AP"] is not None]
  paths = write_ranked_specs(
      [(parse_spec(w["spec"], search.min_level, search.max_level), w["reward"],
        f"{w['source']} reward") for w in winners[:search.num_best]], directory)
  summary["best"] = winners[:search.num_best]
  summary["best_files"] = paths
  from nasfpn_tf.search.proxy_validation import validation_line
  summary["proxy_validation"] = validation_line(search.validation.report)
  print(summary["proxy_validation"])
  _write_json(os.path.join(directory, SUMMARY_FILE), summary)
  for w in winners[:search.num_best]:
    print(f"{w['source']} reward {w['reward']:.4f}  {w['spec']}")
  print(f"winner: {paths[0] if paths else 'none'}")
  return summary
