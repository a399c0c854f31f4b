"""FPN, the published NAS-FPN cell, PANet and a searched pyramid at the embedded default's full
budget, same everything but the decoder, over seeds: the table of AP (mean and spread).

Each (decoder, seed) is one `python run.py` of configs/shapes_nasfpn.yaml (FPN:
configs/shapes_fpn.yaml) with `runtime.seed`, run one after another into OUT/<name>_<dtype>_s<seed>;
a run whose eval_results.json exists is not run again, so a killed comparison continues.

  python bench/compare_decoders.py --out runs/decoders \\
      --searched runs/oneshot/search/best_1.yaml          # ~8 x 8-15 min on 2 CPUs
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def decoders(searched: str) -> dict:
  """name -> (config file, extra overrides)."""
  table = {"fpn": ("configs/shapes_fpn.yaml", []),
           "nasfpn": ("configs/shapes_nasfpn.yaml", []),
           "panet": ("configs/shapes_nasfpn.yaml", ["task.model.decoder.spec=panet"])}
  if searched:
    table["winner"] = ("configs/shapes_nasfpn.yaml", [f"task.model.decoder.spec='{searched}'"])
  return table


def run_one(out: str, name: str, config: str, extra: list, seed: int, dtype: str) -> dict:
  model_dir = os.path.join(out, f"{name}_{dtype}_s{seed}")
  results = os.path.join(model_dir, "eval_results.json")
  if not os.path.exists(results):
    start, load = time.time(), os.getloadavg()[0]
    command = [sys.executable, os.path.join(ROOT, "run.py"), f"--config_file={config}",
               f"--model_dir={model_dir}", "--noexport_after_training",
               f"--params_override=runtime.seed={seed},runtime.mixed_precision_dtype={dtype}"]
    command += [f"--params_override={e}" for e in extra]
    subprocess.run(command, cwd=ROOT, check=True)
    print(f"{name} seed {seed}: {time.time() - start:.0f} s (load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end)", flush=True)
  with open(results) as f:
    return json.load(f)


def main(argv: Optional[Sequence[str]] = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--searched", default="", help="a spec (file or string) for the 'winner' row")
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--dtype", default="bfloat16", help="runtime.mixed_precision_dtype")
  args = p.parse_args(argv)
  rows = {}
  for seed in range(args.seeds):  # seed-major: a cut-short comparison has every decoder once
    for name, (config, extra) in decoders(args.searched).items():
      rows.setdefault(name, []).append(run_one(args.out, name, config, extra, seed, args.dtype))
  print(f"\n| decoder | AP per seed (0..{args.seeds - 1}) | mean AP | spread (half range) "
        "| mean AP50 |\n|---|---|---|---|---|")
  for name, results in rows.items():
    ap = [r["AP"] for r in results]
    print(f"| {name} | {', '.join(f'{a:.3f}' for a in ap)} | {statistics.mean(ap):.3f} | "
          f"{(max(ap) - min(ap)) / 2:.3f} | {statistics.mean(r['AP50'] for r in results):.3f} |")


if __name__ == "__main__":
  main()
