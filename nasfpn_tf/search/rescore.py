"""Re-scoring the best one-shot architectures with the stand-alone proxy, under ASHA.

Each candidate is trained as a child (`proxy_task.child_config`, the experiment's
`trainer` budget) and evaluated every `trainer.validation_interval` steps; each
evaluation is reported to Ray Tune, whose `ASHAScheduler` (asynchronous
successive halving) stops the children that trail at a rung. The scheduler is
Ray's; nothing here decides which child stops.

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


def _child_trainable(config: dict[str, Any], base_config: ExperimentConfig = None,
                     root_dir: str = "") -> None:
  """Ray Tune function trainable: trains one child, reporting AP at each evaluation."""
  import keras
  from ray import tune

  from nasfpn_tf import file_io
  from nasfpn_tf.search.proxy_task import child_config
  from nasfpn_tf.trainer import train_and_evaluate

  arch = config["arch"]
  spec = from_records(arch["cells"], arch["min_level"], arch["max_level"])
  reward = ProxyReward(base_config, root_dir)
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

  Rows: `spec` (compact string), `AP` (last evaluation), `evaluations` (how many the
  child got), `finished` (trained to the full budget, not stopped by ASHA).
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
                                     root_dir=os.path.join(directory, "children"))
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
        trainable, param_space={"arch": tune.grid_search(params)},
        tune_config=tune.TuneConfig(scheduler=scheduler,
                                    max_concurrent_trials=base_config.search.max_concurrent,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name="rescore", storage_path=storage, verbose=0))
    results = tuner.fit()
  finally:
    if started:
      ray.shutdown()
  rows = []
  for result in results:
    arch = result.config["arch"]
    metrics = result.metrics or {}
    rows.append({"spec": arch["spec"], "AP": metrics.get("AP"),
                 "evaluations": int(metrics.get("training_iteration", 0)),
                 "finished": bool(metrics.get("finished", False)),
                 "error": None if result.error is None else str(result.error)[:300]})
  rows.sort(key=lambda r: -(r["AP"] if r["AP"] is not None else -1.0))
  file_io.write_json(path, {"num_evaluations": num_evals, "rows": rows}, indent=1)
  return rows
