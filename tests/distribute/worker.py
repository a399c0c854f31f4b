"""Trains tiny experiments in a fresh process, for the tests in this folder.

  python tests/distribute/worker.py SPEC_JSON

SPEC_JSON: {"logical_cpus": 0, "runs": [{"model_dir": ..., "override": ..., "out": ...}]}.
Logical CPU devices must exist before TensorFlow initialises, hence a process of its own.
Each run calls `trainer.train` and writes to `out` (.npz) the final weights as `w0, w1, ...`,
plus `steps`, `resumed_from`, `replicas` and the per-epoch `loss` history.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(spec_path: str) -> None:
  with open(spec_path) as f:
    spec = json.load(f)
  from nasfpn_tf import distribute
  if spec.get("logical_cpus"):
    distribute.ensure_logical_cpus(spec["logical_cpus"])
  import numpy as np
  from nasfpn_tf import trainer
  from nasfpn_tf.configs.loading import load_config
  for run in spec["runs"]:
    config = load_config("", [run["override"]])
    result = trainer.train(config, run["model_dir"], verbose=0)
    weights = {f"w{i}": np.asarray(w.numpy()) for i, w in enumerate(result.model.weights)}
    np.savez(run["out"], steps=result.steps, resumed_from=result.resumed_from,
             replicas=result.model.distribute_strategy.num_replicas_in_sync,
             loss=np.asarray(result.history.get("loss", []), np.float64), **weights)
    print(f"run done: {run['out']} steps={result.steps}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
