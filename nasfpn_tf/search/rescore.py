"""Re-scoring the best one-shot architectures with the stand-alone proxy, under ASHA.

Each candidate is trained as a child (`proxy_task.child_config`, the experiment's
`trainer` budget) and evaluated every `trainer.validation_interval` steps; each
evaluation is reported to Ray Tune, whose `ASHAScheduler` (asynchronous
successive halving) stops the children that trail at a rung. The scheduler is
Ray's; nothing here decides which child stops.

With `search.oneshot.rescore_seeds` = n > 1 each architecture trains n children, seeds
`runtime.seed` .. `runtime.seed + n - 1` (children of seed offset s > 0 live in
`children_seed<s>/`), ASHA sees every child as its own trial, and an architecture is ranked
by the mean of its children's last AP: one proxy seed misranks (see `OneShotConfig`).

Resuming: a child that finished has its `proxy_reward.json` (it is not trained
again), the finished table `rescore.json` ends the stage for good, and a child
stopped or killed mid-way resumes from its own backups when the stage reruns.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

from nasfpn_tf.architecture_spec import ArchitectureSpec, from_records
from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.search.rewards import ProxyReward, read_stored_reward, write_stored_reward

RESCORE_FILE = "rescore.json"


def children_dir(directory: str, seed_offset: int) -> str:
  """Where the children of one seed go (seed offset 0: `children/`, as with one seed)."""
  return os.path.join(directory, "children" if seed_offset == 0 else f"children_seed{seed_offset}")


def seeded_config(base_config: ExperimentConfig, seed_offset: int) -> ExperimentConfig:
  """`base_config` with `runtime.seed` moved on by `seed_offset` (unchanged for 0)."""
  if seed_offset == 0:
    return base_config
  from nasfpn_tf.configs.loading import override
  return override(base_config, {"runtime": {"seed": base_config.runtime.seed + seed_offset}})


def _child_trainable(config: dict[str, Any], base_config: ExperimentConfig = None,
                     directory: str = "") -> None:
  """Ray Tune function trainable: trains one child, reporting AP at each evaluation."""
  import keras
  from ray import tune

  from nasfpn_tf import file_io
  from nasfpn_tf.search.proxy_task import child_config
  from nasfpn_tf.trainer import train_and_evaluate

  arch, seed_offset = config["arch"], config.get("seed", 0)
  spec = from_records(arch["cells"], arch["min_level"], arch["max_level"])
  base_config = seeded_config(base_config, seed_offset)
  reward = ProxyReward(base_config, children_dir(directory, seed_offset))
  model_dir = reward.model_dir(spec)
  stored = read_stored_reward(model_dir, "AP")
  if stored is not None:
    tune.report({"AP": stored, "finished": True})
    return

  train_steps = base_config.trainer.train_steps

  class ReportEvaluation(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if not logs or "val_AP" not in logs:
        return
      finished = int(self.model.optimizer.iterations.numpy()) >= train_steps
      if finished:
        # ASHA stops a trial as soon as it reports its last rung (max_t): store the result
        # now, so that a rerun finds this child done.
        write_stored_reward(model_dir, spec, {k[4:]: v for k, v in logs.items()
                                        if k.startswith("val_")})
      tune.report({"AP": float(logs["val_AP"]), "finished": finished})

  file_io.makedirs(model_dir)
  metrics = train_and_evaluate(child_config(base_config, spec), model_dir, verbose=2,
                               callbacks=[ReportEvaluation()])
  write_stored_reward(model_dir, spec, metrics)
  tune.report({"AP": float(metrics["AP"]), "finished": True})


def rescore(base_config: ExperimentConfig, specs: Sequence[ArchitectureSpec], directory: str,
            ray_address: Optional[str] = None) -> list[dict[str, Any]]:
  """Trains `specs` as stand-alone children under ASHA; returns one row per spec, best first.

  Rows: `spec` (compact string), `AP` (last evaluation; with several seeds the mean over
  them), `AP_per_seed`, `evaluations` (the fewest any of its children got), `finished`
  (every child trained to the full budget, none stopped by ASHA).
  """
  from nasfpn_tf import file_io  # local: file_io imports TensorFlow

  path = os.path.join(directory, RESCORE_FILE)
  if file_io.exists(path):
    return json.loads(file_io.read_text(path))["rows"]
  from nasfpn_tf.search.ray_engine import import_ray, init_ray

  ray, tune = import_ray()
  from ray.tune.schedulers import ASHAScheduler

  search = base_config.search
  t, oneshot = base_config.trainer, base_config.search.oneshot
  num_evals = max(1, -(-t.train_steps // t.validation_interval))
  started = init_ray(dataclasses.replace(search, ray_address=ray_address or search.ray_address))
  try:
    trainable = tune.with_parameters(_child_trainable, base_config=base_config,
                                     directory=directory)
    trainable = tune.with_resources(trainable, {"cpu": base_config.search.trial_cpus,
                                                "gpu": base_config.search.trial_gpus})
    scheduler = ASHAScheduler(time_attr="training_iteration", metric="AP", mode="max",
                              max_t=num_evals, grace_period=min(oneshot.rescore_grace_evals, num_evals),
                              reduction_factor=oneshot.rescore_reduction_factor)
    params = [{"cells": s.to_records(), "min_level": s.min_level, "max_level": s.max_level,
               "spec": s.to_string()} for s in specs]
    storage = os.path.join(directory, "ray")
    file_io.makedirs(storage)
    tuner = tune.Tuner(
        trainable, param_space={"arch": tune.grid_search(params),
                                "seed": tune.grid_search(list(range(oneshot.rescore_seeds)))},
        tune_config=tune.TuneConfig(scheduler=scheduler,
                                    max_concurrent_trials=base_config.search.max_concurrent,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name="rescore", storage_path=storage, verbose=0))
    results = tuner.fit()
  finally:
    if started:
      ray.shutdown()
  children: dict[str, list[dict[str, Any]]] = {}
  for result in results:
    metrics = result.metrics or {}
    children.setdefault(result.config["arch"]["spec"], []).append({
        "seed": result.config.get("seed", 0), "AP": metrics.get("AP"),
        "evaluations": int(metrics.get("training_iteration", 0)),
        "finished": bool(metrics.get("finished", False)),
        "error": None if result.error is None else str(result.error)[:300]})
  rows = [architecture_row(spec, runs) for spec, runs in children.items()]
  rows.sort(key=lambda r: -(r["AP"] if r["AP"] is not None else -1.0))
  file_io.write_json(path, {"num_evaluations": num_evals, "rows": rows}, indent=1)
  return rows


def architecture_row(spec: str, children: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """One architecture's row from its children's results (one per seed)."""
  children = sorted(children, key=lambda c: c["seed"])
  scores = [c["AP"] for c in children if c["AP"] is not None]
  errors = [c["error"] for c in children if c["error"]]
  return {"spec": spec, "AP": sum(scores) / len(scores) if scores else None,
          "AP_per_seed": [c["AP"] for c in children],
          "evaluations": min(c["evaluations"] for c in children),
          "finished": all(c["finished"] for c in children),
          "error": errors[0] if errors else None}
