"""Where inference memory goes: resident memory of our R-50 NAS-FPN 7@256 (float32, 640 x 640)
after each stage, with TensorFlow's oneDNN pool and with the system allocator.

Each allocator runs in a fresh process (TensorFlow reads `TF_ONEDNN_USE_SYSTEM_ALLOCATOR` when
it creates its CPU allocator). The stages follow bench/compare_modelgarden.py: build (the model,
the compiled optimizer, one training-mode batch to set batch-norm statistics), then, after
returning freed heap to the OS and restarting the peak, the network forward at batch 1, the
full forward with NMS at batch 1 and the network forward at batch 8. Printed per stage: RSS
after it and the peak (VmHWM) during it, in MiB.

`--train`: the other side of the trade, the embedded default's training step (configs/
shapes_nasfpn.yaml, `auto` precision, batch 16 of random targets): median seconds per step of
`--steps` steps and the process's peak RSS, the two allocators in turns, `--rounds` rounds.

  python bench/memory.py            # about 3 minutes on 2 CPUs
  python bench/memory.py --train    # about 4 minutes
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SETTINGS = {"TensorFlow's oneDNN pool": "0", "system allocator": "1"}
STAGES = [("net", 1), ("full", 1), ("net", 8)]


def rss_mib() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def measure() -> None:
  """One process, one allocator: prints `stage rss peak` lines."""
  sys.path[:0] = [ROOT, HERE]
  import compare_modelgarden as cm  # pylint: disable=import-outside-toplevel
  import modelgarden_worker as worker  # pylint: disable=import-outside-toplevel

  runner = cm.OursRunner([cm.DEFAULT_OVERRIDE])
  runner.build("nasfpn", 640)
  print(f"STAGE build {rss_mib():.0f} {worker.peak_rss_mib():.0f}", flush=True)
  for kind, batch in STAGES:
    worker.reset_peak_rss()
    runner.prepare(kind, batch, 640, 1)
    runner.run()
    print(f"STAGE {kind}_b{batch} {rss_mib():.0f} {worker.peak_rss_mib():.0f}", flush=True)


def measure_train(steps: int) -> None:
  """One process, one allocator: prints `TRAIN median_s peak_mib`."""
  sys.path[:0] = [ROOT, HERE]
  import statistics  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  import compare_modelgarden as cm  # pylint: disable=import-outside-toplevel
  import modelgarden_worker as worker  # pylint: disable=import-outside-toplevel
  from nasfpn_tf import trainer  # pylint: disable=import-outside-toplevel
  from nasfpn_tf.configs.loading import load_config  # pylint: disable=import-outside-toplevel

  config = load_config(os.path.join(ROOT, "configs", "shapes_nasfpn.yaml"))
  strategy = tf.distribute.get_strategy()
  trainer.set_precision_policy(config, strategy)
  model = trainer.build_compiled_model(config, strategy)
  batch = config.task.train_data.global_batch_size
  size = config.task.model.input_size
  images = np.random.default_rng(0).uniform(0, 255, (batch, *size, 3)).astype(np.float32)
  targets = cm.random_targets(batch, model.num_anchors, model.num_classes)
  for _ in range(3):
    model.train_on_batch(images, targets)
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    model.train_on_batch(images, targets)
    seconds.append(time.perf_counter() - start)
  print(f"TRAIN {statistics.median(seconds):.3f} {worker.peak_rss_mib():.0f}", flush=True)


def _run_in(value: str, *args: str) -> str:
  env = {**os.environ, "TF_ONEDNN_USE_SYSTEM_ALLOCATOR": value, "TF_CPP_MIN_LOG_LEVEL": "2"}
  return subprocess.run([sys.executable, __file__, *args], env=env, check=True,
                        capture_output=True, text=True).stdout


def main_train(steps: int, rounds: int) -> None:
  results = {label: [] for label in SETTINGS}
  for r in range(rounds):
    for label, value in SETTINGS.items():
      line = [l for l in _run_in(value, "--measure_train", str(steps)).splitlines()
              if l.startswith("TRAIN")][0].split()
      results[label].append((float(line[1]), float(line[2])))
      print(f"round {r + 1}, {label}: {line[1]} s/step, peak {line[2]} MiB "
            f"(load {os.getloadavg()[0]:.2f})", flush=True)
  print("\n| allocator | median s/step per round | peak RSS per round [MiB] |\n|---|---|---|")
  for label, rows in results.items():
    print(f"| {label} | {', '.join(f'{s:.3f}' for s, _ in rows)} | "
          f"{', '.join(f'{m:.0f}' for _, m in rows)} |")


def main() -> None:
  rows = {}
  for label, value in SETTINGS.items():
    out = _run_in(value, "--measure")
    rows[label] = [line.split()[1:] for line in out.splitlines() if line.startswith("STAGE")]
    print(f"{label}: done", flush=True)
  print("\n| stage | " + " | ".join(f"{l}: RSS after / peak [MiB]" for l in rows) + " |")
  print("|---" * (len(rows) + 1) + "|")
  for i, (stage, *_) in enumerate(next(iter(rows.values()))):
    print(f"| {stage} | " + " | ".join(f"{r[i][1]} / {r[i][2]}" for r in rows.values()) + " |")
  print(f"(load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
  if "--measure" in sys.argv:
    measure()
  elif "--measure_train" in sys.argv:
    measure_train(int(sys.argv[-1]))
  elif "--train" in sys.argv:
    main_train(steps=20, rounds=2)
  else:
    main()
