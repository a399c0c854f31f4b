"""Is the search's reward worth trusting? Noise and rank correlation of its proxies.

  python run.py --mode=validate_proxy --config_file=configs/search_shapes_oneshot.yaml \
      --model_dir=runs/proxy_validation

Scores a fixed set of architectures (`search.validation.architectures`, e.g. fpn,
nasfpn, panet, plus `num_sampled` uniform samples of the search space) with up to
three rewards, each over `seeds` seeds:
  oneshot  AP of the path in a supernet trained with that seed (7-cell specs only:
           others have no path in the supernet);
  proxy    AP of a stand-alone child trained with the experiment's `trainer`;
  full     AP after training with `search.validation.full_config` (by default the
           embedded default experiment) with only the decoder replaced.
and reports (a) each reward's spread over seeds of the same architecture, (b) Kendall's
tau and Spearman's rho (scipy) between each reward's mean and the full budget's mean
AP. `proxy_validation.json` and `proxy_validation.png` (reward vs full AP) go to
MODEL_DIR; every trained model is kept under MODEL_DIR, so a rerun after a kill
trains only what is missing. `search.validation.max_concurrent` > 1 trains the children
of each proxy or full stage that many at a time, as Ray Tune trials.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Optional

import numpy as np

from nasfpn_tf.architecture_spec import ArchitectureSpec, parse_spec
from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.configs.search_config import SearchConfig

REPORT_FILE = "proxy_validation.json"
PLOT_FILE = "proxy_validation.png"
# Below this Kendall tau a reward ranks architectures too unlike full training to steer a search.
WEAK_TAU = 0.3


def validation_architectures(config: ExperimentConfig) -> dict[str, ArchitectureSpec]:
  """The named architectures plus `num_sampled` uniform samples, by display name.

  Each entry of `search.validation.architectures` is a shipped name, a compact spec string,
  or a one-item mapping {label: spec}.
  """
  from nasfpn_tf.search.search_space import SearchSpace

  s, v = config.search, config.search.validation
  archs = {}
  for entry in v.architectures:
    # A shipped name or compact string names itself; {label: spec} gives a long spec a label.
    (label, spec), = entry.items() if isinstance(entry, dict) else ((entry, entry),)
    archs[label] = parse_spec(spec, s.min_level, s.max_level)
  space = SearchSpace(s.num_cells, s.min_level, s.max_level)
  for i in range(v.num_sampled):
    spec = space.actions_to_spec(space.sample_uniform(np.random.default_rng([v.sample_seed, i])))
    archs[f"sampled_{i}"] = spec
  return archs


def _seeded(config: ExperimentConfig, seed: int) -> ExperimentConfig:
  from nasfpn_tf.configs.loading import override
  return override(config, {"runtime": {"seed": seed}})


def _oneshot_scores(config, archs, seed: int, directory: str) -> dict[str, Optional[float]]:
  from nasfpn_tf import file_io
  from nasfpn_tf.search.oneshot import make_oneshot_reward, train_supernet

  path = os.path.join(directory, "oneshot_rewards.json")
  if file_io.exists(path):
    return json.loads(file_io.read_text(path))
  seeded = _seeded(config, seed)
  model = train_supernet(seeded, os.path.join(directory, "supernet"), verbose=2)
  reward = make_oneshot_reward(seeded, model)
  scores = {name: (reward(spec) if len(spec.cells) == config.search.num_cells else None)
            for name, spec in archs.items()}
  _write_json(path, scores)
  return scores


def _child_scores(config, archs, seed: int, directory: str,
                  search: SearchConfig) -> dict[str, float]:
  """AP of a stand-alone child of `config` per architecture, one after another or, with
  `search.validation.max_concurrent` > 1, as Ray Tune trials."""
  from nasfpn_tf.search.rewards import ProxyReward
  seeded = _seeded(config, seed)
  if search.validation.max_concurrent > 1:
    return _children_on_ray(seeded, archs, directory, search)
  reward = ProxyReward(seeded, directory)
  return {name: reward(spec) for name, spec in archs.items()}


def _child_trainable(params: dict[str, Any], base_config: ExperimentConfig = None,
                     directory: str = "", threads: int = 1) -> None:
  """Ray Tune function trainable: one child, through ProxyReward (which stores its AP and
  reuses a stored one, so a rerun trains only what is missing)."""
  import tensorflow as tf
  from ray import tune

  from nasfpn_tf.architecture_spec import from_records
  from nasfpn_tf.search.rewards import ProxyReward

  try:
    # Children share the machine: TensorFlow would give each one a thread per core.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:   # this worker already ran TensorFlow: keep its setting
    pass
  arch = params["arch"]
  spec = from_records(arch["cells"], arch["min_level"], arch["max_level"])
  tune.report({"AP": ProxyReward(base_config, directory)(spec)})


def _children_on_ray(config: ExperimentConfig, archs: dict[str, ArchitectureSpec],
                     directory: str, search: SearchConfig) -> dict[str, float]:
  """The children of one stage as a Ray Tune grid, `max_concurrent` at a time."""
  from nasfpn_tf import file_io
  from nasfpn_tf.search.ray_engine import import_ray, init_ray

  ray, tune = import_ray()
  started = init_ray(search)
  try:
    trainable = tune.with_parameters(_child_trainable, base_config=config, directory=directory,
                                     threads=max(1, int(search.trial_cpus)))
    trainable = tune.with_resources(trainable, {"cpu": search.trial_cpus,
                                                "gpu": search.trial_gpus})
    params = [{"name": name, "cells": spec.to_records(), "min_level": spec.min_level,
               "max_level": spec.max_level} for name, spec in archs.items()]
    storage = os.path.join(directory if "://" in directory else os.path.abspath(directory), "ray")
    file_io.makedirs(storage)
    tuner = tune.Tuner(
        trainable, param_space={"arch": tune.grid_search(params)},
        tune_config=tune.TuneConfig(max_concurrent_trials=search.validation.max_concurrent,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name="children", storage_path=storage,
                                  verbose=0))
    results = tuner.fit()
  finally:
    if started:
      ray.shutdown()
  got = {}
  for result in results:
    name = result.config["arch"]["name"]
    if result.error is not None:
      last = str(result.error).strip().splitlines()[-1:] or [""]
      raise RuntimeError(f"proxy validation: child '{name}' in {directory} failed: {last[0]}")
    got[name] = float(result.metrics["AP"])
  return {name: got[name] for name in archs}


def _full_config(config: ExperimentConfig) -> ExperimentConfig:
  """`search.validation.full_config`, or the embedded default experiment when empty."""
  from nasfpn_tf.configs.loading import load_config
  path = config.search.validation.full_config or os.path.join(
      os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      "configs", "shapes_nasfpn.yaml")
  return load_config(path)


def rank_correlations(reward: dict[str, float], target: dict[str, float]) -> dict[str, Any]:
  """Kendall tau and Spearman rho between two {arch: value} maps over their common keys."""
  from scipy import stats

  names = sorted(k for k in reward if k in target and reward[k] is not None
                 and target[k] is not None)
  if len(names) < 3:
    return {"n": len(names), "kendall_tau": None, "spearman_rho": None}
  x, y = [reward[k] for k in names], [target[k] for k in names]
  tau = stats.kendalltau(x, y).statistic
  rho = stats.spearmanr(x, y).statistic
  return {"n": len(names), "kendall_tau": None if np.isnan(tau) else float(tau),
          "spearman_rho": None if np.isnan(rho) else float(rho)}


def summarise(scores: dict[str, dict[str, list]]) -> dict[str, Any]:
  """Per reward: mean and spread (max - min over seeds) per arch, mean spread, correlations
  of its means with the full budget's means."""
  out: dict[str, Any] = {}
  means = {}
  for reward, per_arch in scores.items():
    values = {a: [v for v in vs if v is not None] for a, vs in per_arch.items()}
    means[reward] = {a: float(np.mean(v)) for a, v in values.items() if v}
    spreads = {a: float(np.max(v) - np.min(v)) for a, v in values.items() if len(v) > 1}
    out[reward] = {"mean": means[reward], "spread": spreads,
                   "mean_spread": float(np.mean(list(spreads.values()))) if spreads else None}
  if "full" in means:
    # The architectures every reward scores: the like-for-like comparison of rewards (the
    # one-shot reward skips specs without a path in the supernet).
    common = set.intersection(*(set(m) for m in means.values()))
    for reward in means:
      if reward != "full":
        out[reward]["vs_full"] = rank_correlations(means[reward], means["full"])
        out[reward]["vs_full_common"] = rank_correlations(
            {a: v for a, v in means[reward].items() if a in common}, means["full"])
        # A search converges on the top of its reward, so the top is where order matters.
        out[reward]["vs_full_top_half"] = rank_correlations(
            means[reward], _top_half(means["full"], means[reward]))
        # How much the verdict hangs on the proxy's seed: each seed alone against full's mean.
        out[reward]["vs_full_by_seed"] = [
            rank_correlations(seed, means["full"])["kendall_tau"]
            for seed in _by_seed(scores[reward])]
    # The noise ceiling: full training against itself, seed against seed. A proxy's tau
    # is not expected to beat it.
    full_seeds = _by_seed(scores["full"])
    out["full"]["seed_to_seed_tau"] = [
        rank_correlations(full_seeds[i], full_seeds[j])["kendall_tau"]
        for i in range(len(full_seeds)) for j in range(i + 1, len(full_seeds))]
  return out


def _top_half(full: dict[str, float], reward: dict[str, float]) -> dict[str, float]:
  """The better half (rounded up) by full AP of the architectures both maps score."""
  names = sorted((a for a in full if reward.get(a) is not None), key=lambda a: -full[a])
  return {a: full[a] for a in names[:(len(names) + 1) // 2]}


def _by_seed(per_arch: dict[str, list]) -> list[dict[str, float]]:
  """{arch: [value per seed]} as [{arch: value} per seed], Nones left out."""
  seeds = max((len(v) for v in per_arch.values()), default=0)
  return [{a: v[s] for a, v in per_arch.items() if len(v) > s and v[s] is not None}
          for s in range(seeds)]


def plot(summary: dict[str, Any], path: str,
         scores: Optional[dict[str, dict[str, list]]] = None) -> None:
  """Each reward's mean against the full budget's mean AP, one panel per reward; with
  `scores`, bars from the lowest to the highest seed on both axes."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rewards = [r for r in summary if r != "full" and "vs_full" in summary[r]]
  if not rewards:
    return
  fig, axes = plt.subplots(1, len(rewards), figsize=(5 * len(rewards), 4.2), squeeze=False)
  full = summary["full"]["mean"]
  for ax, reward in zip(axes[0], rewards):
    means = summary[reward]["mean"]
    names = [a for a in means if a in full]
    ax.scatter([means[a] for a in names], [full[a] for a in names])
    if scores:
      x_err, y_err = _range_bars(scores[reward], means, names), _range_bars(
          scores["full"], full, names)
      ax.errorbar([means[a] for a in names], [full[a] for a in names], xerr=x_err,
                  yerr=y_err, fmt="none", ecolor="0.6", elinewidth=0.8)
    for a in names:
      ax.annotate(a, (means[a], full[a]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    c = summary[reward]["vs_full"]
    tau = "n/a" if c["kendall_tau"] is None else f"{c['kendall_tau']:.2f}"
    rho = "n/a" if c["spearman_rho"] is None else f"{c['spearman_rho']:.2f}"
    ax.set_title(f"{reward}: Kendall tau {tau}, Spearman rho {rho} (n={c['n']})", fontsize=9)
    ax.set_xlabel(f"{reward} reward (mean over seeds)")
    ax.set_ylabel("full-budget AP (mean over seeds)")
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, dpi=100, format="png")
  plt.close(fig)
  from nasfpn_tf import file_io
  file_io.write_bytes(path, png.getvalue())


def _range_bars(per_arch: dict[str, list], means: dict[str, float],
                names: list[str]) -> np.ndarray:
  """Matplotlib's asymmetric error bars: mean - lowest seed, highest seed - mean."""
  lows, highs = [], []
  for a in names:
    got = [v for v in per_arch[a] if v is not None]
    lows.append(means[a] - min(got))
    highs.append(max(got) - means[a])
  return np.array([lows, highs])


def _write_json(path: str, data: Any) -> None:
  from nasfpn_tf import file_io  # local: file_io imports TensorFlow
  file_io.write_json(path, data, indent=1)


def validate_proxy(config: ExperimentConfig, model_dir: str,
                   ray_address: Optional[str] = None) -> dict[str, Any]:
  """Scores the validation architectures with every configured reward; writes the report.

  Stages run seed by seed, each reward in `search.validation.rewards`' order, and the
  report is rewritten after every stage (its `done` lists the finished ones): the full
  validation is hours of CPU, and an interrupted one still says what it has measured.
  With `search.validation.max_concurrent` > 1 the children of a stage train at once on
  Ray (`ray_address`, else `search.ray_address`, else a local cluster).
  """
  v = config.search.validation
  search = dataclasses.replace(config.search,
                               ray_address=ray_address or config.search.ray_address)
  archs = validation_architectures(config)
  scores: dict[str, dict[str, list]] = {r: {a: [] for a in archs} for r in v.rewards}
  done: list[str] = []
  # Written before the first stage too: with no reward configured it is the whole report.
  report = _write_report(model_dir, archs, v.seeds, scores, done)
  for seed in range(v.seeds):
    for reward in v.rewards:
      directory = os.path.join(model_dir, f"{reward}_seed{seed}")
      print(f"proxy validation: {reward} reward, seed {seed + 1} of {v.seeds} -> {directory}")
      if reward == "oneshot":
        got = _oneshot_scores(config, archs, seed, directory)
      elif reward == "proxy":
        got = _child_scores(config, archs, seed, directory, search)
      else:
        got = _child_scores(_full_config(config), archs, seed, directory, search)
      for a, value in got.items():
        scores[reward][a].append(value)
      done.append(f"{reward}_seed{seed}")
      report = _write_report(model_dir, archs, v.seeds, scores, done)
  for reward, s in report["summary"].items():
    line = f"{reward}: mean spread over seeds {s['mean_spread']}"
    if "vs_full" in s:
      line += f", vs full: {s['vs_full']}"
    print(line)
  return report


def _write_report(model_dir: str, archs: dict[str, ArchitectureSpec], seeds: int,
                  scores: dict[str, dict[str, list]], done: list[str]) -> dict[str, Any]:
  summary = summarise(scores)
  report = {"architectures": {a: s.to_string() for a, s in archs.items()}, "seeds": seeds,
            "done": list(done), "scores": scores, "summary": summary}
  _write_json(os.path.join(model_dir, REPORT_FILE), report)
  plot(summary, os.path.join(model_dir, PLOT_FILE), scores)
  return report


def correlation_warning(report_path: str, reward: str = "oneshot") -> Optional[str]:
  """A one-line verdict on `reward` from a proxy-validation report (None if there is none)."""
  return _verdict(report_path, reward)[0]


def validation_line(report_path: str, reward: str = "oneshot") -> str:
  """The search summary's line on `reward`: the warning if there is one, else its taus."""
  warning, summary = _verdict(report_path, reward)
  if warning:
    return warning
  c, top = summary["vs_full"], summary.get("vs_full_top_half") or {}
  line = f"the {reward} reward is validated: Kendall tau {c['kendall_tau']:.2f} on {c['n']}"
  if top.get("kendall_tau") is not None:
    line += f", {top['kendall_tau']:.2f} on the best {top['n']}"
  return f"{line} ({report_path})"


def _verdict(report_path: str, reward: str) -> tuple[Optional[str], dict[str, Any]]:
  """(the warning or None, the report's summary of `reward`), the report read once."""
  from nasfpn_tf import file_io

  if not report_path or not file_io.exists(report_path):
    return (f"the {reward} reward has not been validated (run.py --mode=validate_proxy): "
            "its ranking may not hold after full training"), {}
  summary = json.loads(file_io.read_text(report_path))["summary"].get(reward, {})
  c = summary.get("vs_full")
  if not c or c["kendall_tau"] is None:
    return f"{report_path} has no correlation for the {reward} reward", summary
  if c["kendall_tau"] < WEAK_TAU:
    return (f"WARNING: the {reward} reward correlates poorly with full training (Kendall tau "
            f"{c['kendall_tau']:.2f} < {WEAK_TAU} on {c['n']} architectures, {report_path}): "
            "do not trust its ranking"), summary
  top = summary.get("vs_full_top_half") or {}  # absent from older reports
  if top.get("kendall_tau") is not None and top["kendall_tau"] < WEAK_TAU:
    return (f"WARNING: the {reward} reward ranks all architectures like full training "
            f"(Kendall tau {c['kendall_tau']:.2f} on {c['n']}) but not the best ones (tau "
            f"{top['kendall_tau']:.2f} < {WEAK_TAU} on the best {top['n']} by full AP, "
            f"{report_path}): its winners need re-scoring"), summary
  return None, summary
