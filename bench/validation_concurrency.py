"""Wall time of a proxy-validation stage with its children one at a time and N at a time.

Runs `run.py --mode=validate_proxy` twice on the same architectures (`--archs` uniform
samples, the stand-alone proxy reward, one seed), into OUT/serial
(search.validation.max_concurrent=1: in this process) and OUT/concurrent_<N> (N Ray Tune
trials at once), and prints both wall times, their ratio and the load average. A folder
whose proxy_validation.json is finished is not run again.

  python bench/validation_concurrency.py --out runs/concurrency          # ~25 min on 2 CPUs
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_stage(model_dir: str, config: str, archs: int, concurrent: int) -> float:
  """Seconds one validate_proxy of `archs` proxy children took (read back if it finished)."""
  timing = os.path.join(model_dir, "wall_time.json")
  if os.path.exists(timing):
    with open(timing) as f:
      return json.load(f)["seconds"]
  overrides = (f"search.validation.architectures=[],search.validation.num_sampled={archs},"
               "search.validation.seeds=1,search.validation.rewards=[proxy],"
               f"search.validation.max_concurrent={concurrent},search.validation.report=''")
  start, load = time.time(), os.getloadavg()[0]
  subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--mode=validate_proxy",
                  f"--config_file={config}", f"--model_dir={model_dir}",
                  f"--params_override={overrides}"], cwd=ROOT, check=True)
  seconds = time.time() - start
  print(f"max_concurrent={concurrent}: {seconds:.0f} s for {archs} children (load average "
        f"{load:.2f} at start, {os.getloadavg()[0]:.2f} at end)", flush=True)
  with open(timing, "w") as f:
    json.dump({"seconds": seconds, "load_start": load, "load_end": os.getloadavg()[0]}, f)
  return seconds


def main(argv: Optional[Sequence[str]] = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--config", default=os.path.join(ROOT, "configs", "search_shapes_oneshot.yaml"))
  p.add_argument("--archs", type=int, default=4)
  p.add_argument("--concurrent", type=int, default=2)
  args = p.parse_args(argv)
  serial = run_stage(os.path.join(args.out, "serial"), args.config, args.archs, 1)
  together = run_stage(os.path.join(args.out, f"concurrent_{args.concurrent}"), args.config,
                       args.archs, args.concurrent)
  print(f"{args.archs} proxy children: one at a time {serial:.0f} s, {args.concurrent} at a "
        f"time {together:.0f} s: {serial / together:.2f}x the throughput")


if __name__ == "__main__":
  main()
