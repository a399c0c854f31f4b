"""Two localhost workers (TF_CONFIG + MultiWorkerMirroredStrategy) train with model.fit and end
with identical weights; the chief alone writes the model folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.distribute import _helpers as h

# 6 steps in two epochs of 3 (one short epoch from the plan as well: 3 + 3), batch 4 = 2 x 2.
SCHEDULE = ("trainer.train_steps=6,trainer.validation_interval=3,trainer.backup_interval=2,"
            "trainer.checkpoint_interval=3,trainer.learning_rate.warmup_steps=2,"
            "runtime.strategy=multi_worker")


def _start(index: int, ports: list[int], spec: str) -> subprocess.Popen:
  tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
               "task": {"type": "worker", "index": index}}
  return subprocess.Popen([sys.executable, h.WORKER, spec], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=h.ROOT,
                          env=h.env(TF_CONFIG=json.dumps(tf_config)))


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tmp_path):
  model_dir = tmp_path / "model"  # shared, as a bucket would be
  override = f"{h.TINY_MODEL},{h.tiny_data(str(tmp_path / 'data'))},{SCHEDULE}"
  ports = h.free_ports(2)
  specs = [h.write_spec(str(tmp_path / f"spec{i}.json"),
                        [{"model_dir": str(model_dir), "override": override,
                          "out": str(tmp_path / f"worker{i}.npz")}]) for i in range(2)]
  procs = [_start(i, ports, specs[i]) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  w0, w1 = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
  assert int(w0["steps"]) == int(w1["steps"]) == 6
  assert int(w0["replicas"]) == int(w1["replicas"]) == 2
  names = [k for k in w0.files if k.startswith("w")]
  assert len(names) > 100
  for k in names:
    np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
  # Both workers saw the same (globally averaged) logs.
  np.testing.assert_array_equal(w0["loss"], w1["loss"])
  assert np.all(np.isfinite(w0["loss"])) and len(w0["loss"]) == 2
  written = set(os.listdir(model_dir))
  assert {"config.yaml", "checkpoint.weights.h5", "model.keras"} <= written
  assert "backup" not in written  # removed once the model file is safe
