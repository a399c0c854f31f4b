"""MirroredStrategy over 2 logical CPUs trains like one device on the same global batch."""

import numpy as np
import pytest

from tests.distribute import _helpers as h

# Constant LR, no augmentation, deterministic order: the only differences left between the two
# runs are the batch split over replicas and float round-off (oneDNN). Measured: the losses of
# both steps differ by 6.0e-8 relative, one float32 ulp at a loss of ~2 (README).
SCHEDULE = ("trainer.train_steps=2,trainer.validation_interval=1,trainer.backup_interval=100,"
            "trainer.learning_rate.type=constant,trainer.learning_rate.warmup_steps=0,"
            "trainer.learning_rate.base_lr=0.04,trainer.learning_rate.base_batch_size=4,"
            "task.train_data.deterministic=true,"
            # The bound below is float32 round-off; `auto` is bfloat16 on AMX CPUs.
            "runtime.mixed_precision_dtype=float32")


@pytest.mark.slow
def test_two_replicas_match_one_device(tmp_path):
  common = f"{h.TINY_MODEL},{h.tiny_data(str(tmp_path / 'data'), augment=False)},{SCHEDULE}"
  runs = [{"model_dir": str(tmp_path / name), "out": str(tmp_path / f"{name}.npz"),
           "override": f"{common},runtime.strategy={strategy},runtime.num_cpu_devices=2"}
          for name, strategy in (("single", "default"), ("mirrored", "mirrored"))]
  spec = h.write_spec(str(tmp_path / "spec.json"), runs, logical_cpus=2)
  proc = h.run_worker(spec, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  single, mirrored = (np.load(r["out"]) for r in runs)
  assert int(single["steps"]) == int(mirrored["steps"]) == 2
  # Step 1's loss is computed from the shared initial weights, step 2's after one update.
  rel = np.abs(mirrored["loss"] - single["loss"]) / np.abs(single["loss"])
  print(f"loss single {single['loss']}, mirrored {mirrored['loss']}, relative diff {rel}")
  # The README's "to 6e-8": allow up to 4 float32 ulps (2.4e-7 relative at a loss in [1, 2)).
  np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=2.4e-7, atol=0)
  # Per tensor, relative to its largest value: conv biases that feed a batch norm get only
  # round-off as gradient, which dominates their tiny values (~3e-3 here).
  names = [k for k in single.files if k.startswith("w")]
  worst = max(np.max(np.abs(single[k] - mirrored[k])) / (np.max(np.abs(single[k])) + 1e-6)
              for k in names)
  print(f"largest weight difference after 2 steps, relative to the tensor's scale: {worst:.2e}")
  assert worst < 1e-2, worst
