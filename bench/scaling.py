"""How our forward time grows with image size and with the number of NAS-FPN repeats.

Two sweeps of the batch-1 forward pass (backbone + decoder + head, `tf.function`
with `jit_compile=runtime.jit_compile`), each point the median of `--repeats` timed
calls after a traced call and `--warmup` more:

  size sweep     R-50 + NAS-FPN 7@256 at 256, 384, ..., 1024 pixels a side;
  repeats sweep  R-50 + NAS-FPN N@256 at `--repeats_size`, N = 1..7; the decoder
                 alone is timed too, since the backbone and head do not change with N.

Prints both tables with the 1-minute load average of each point, fits
time = c * pixels**a and time = c * repeats**b by least squares in log-log space
(plus time = t0 + t1 * N, the honest model for the repeats sweep: backbone and head are
a constant term), and writes a PNG (matplotlib, Agg) and a JSON file.

Run (about 10 minutes on 2 CPUs):
  python bench/scaling.py
  python bench/scaling.py --sizes 256,512 --num_repeats 1,3 --repeats 2   # quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from typing import Callable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from compare_modelgarden import DEFAULT_OVERRIDE  # noqa: E402
from modelgarden_worker import timed  # noqa: E402

CONFIG_FILE = os.path.join(ROOT, "configs", "retinanet_r50_nasfpn_640_coco.yaml")


def build(size: int, num_repeats: int, overrides: Sequence[str]):
  """Our NAS-FPN RetinaNet at `size` with `num_repeats`; returns (model, jit_compile)."""
  import keras  # pylint: disable=import-outside-toplevel
  from nasfpn_tf.configs.loading import load_config  # pylint: disable=import-outside-toplevel
  from nasfpn_tf.modeling.factory import build_model  # pylint: disable=import-outside-toplevel

  keras.backend.clear_session()
  config = load_config(CONFIG_FILE, [
      f"task.model.input_size=[{size},{size}]", f"task.model.decoder.num_repeats={num_repeats}",
      "runtime.strategy=default", "runtime.mixed_precision_dtype=float32", *overrides])
  keras.mixed_precision.set_global_policy("float32")
  return build_model(config.task.model), bool(config.runtime.jit_compile)


def median_time(fn: Callable[[], object], warmup: int, repeats: int) -> float:
  """Median seconds of `repeats` calls after one traced call and `warmup` more."""
  for _ in range(1 + warmup):
    fn()
  return statistics.median(timed(fn) for _ in range(repeats))


def forward_fns(model, size: int, jit: bool) -> dict[str, Callable[[], object]]:
  """Batch-1 callables for the whole network and for the decoder alone."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), tf.float32)
  net = tf.function(lambda t: model(t, training=False), jit_compile=jit)
  features = {k: tf.identity(v) for k, v in model.backbone(x, training=False).items()}
  decoder = tf.function(lambda f: model.decoder(f, training=False), jit_compile=jit)
  as_numpy = lambda out: [t.numpy() for t in tf.nest.flatten(out)]
  return {"net": lambda: as_numpy(net(x)), "decoder": lambda: as_numpy(decoder(features))}


def sweep_sizes(sizes: Sequence[int], args: argparse.Namespace) -> list[dict]:
  rows = []
  for size in sizes:
    model, jit = build(size, 7, args.params_override)
    seconds = median_time(forward_fns(model, size, jit)["net"], args.warmup, args.repeats)
    rows.append({"size": size, "pixels": size * size, "net_s": seconds,
                 "load": os.getloadavg()[0]})
    print(f"  size {size:5d}: net {seconds:.3f} s  (load {rows[-1]['load']:.2f})", flush=True)
  return rows


def sweep_repeats(num_repeats: Sequence[int], args: argparse.Namespace) -> list[dict]:
  rows = []
  for n in num_repeats:
    model, jit = build(args.repeats_size, n, args.params_override)
    fns = forward_fns(model, args.repeats_size, jit)
    row = {"num_repeats": n}
    for name, fn in fns.items():
      row[f"{name}_s"] = median_time(fn, args.warmup, args.repeats)
    row["load"] = os.getloadavg()[0]
    rows.append(row)
    print(f"  repeats {n}: net {row['net_s']:.3f} s, decoder {row['decoder_s']:.3f} s  "
          f"(load {row['load']:.2f})", flush=True)
  return rows


def power_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
  """Least-squares (c, a) of y = c * x**a in log-log space."""
  lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
  a, log_c = linear_fit(lx, ly)[::-1]
  return math.exp(log_c), a


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
  """Least-squares (intercept, slope) of y = intercept + slope * x."""
  mx, my = statistics.fmean(xs), statistics.fmean(ys)
  sxx = sum((x - mx) ** 2 for x in xs)
  slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
  return my - slope * mx, slope


def fits(size_rows: list[dict], repeat_rows: list[dict]) -> dict:
  out = {}
  if len(size_rows) > 1:
    out["pixels_exponent_a"] = power_fit([r["pixels"] for r in size_rows],
                                         [r["net_s"] for r in size_rows])[1]
  if len(repeat_rows) > 1:
    ns = [r["num_repeats"] for r in repeat_rows]
    out["repeats_exponent_b"] = power_fit(ns, [r["net_s"] for r in repeat_rows])[1]
    out["repeats_exponent_b_decoder"] = power_fit(ns, [r["decoder_s"] for r in repeat_rows])[1]
    out["net_s_intercept"], out["net_s_per_repeat"] = linear_fit(
        ns, [r["net_s"] for r in repeat_rows])
  return out


def plot(size_rows: list[dict], repeat_rows: list[dict], fit: dict, path: str) -> None:
  """Two log-log panels: time vs pixels, time vs repeats, with the fitted power laws."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  if size_rows:
    px = [r["pixels"] for r in size_rows]
    ys = [r["net_s"] for r in size_rows]
    left.loglog(px, ys, "o-", label="net forward, batch 1")
    for r in size_rows:
      left.annotate(str(r["size"]), (r["pixels"], r["net_s"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    if "pixels_exponent_a" in fit:
      c, a = power_fit(px, ys)
      left.loglog(px, [c * p ** a for p in px], "--", label=f"fit: pixels^{a:.2f}")
  left.set(xlabel="pixels (H x W)", ylabel="seconds", title="NAS-FPN 7@256: time vs image size")
  left.legend()
  if repeat_rows:
    ns = [r["num_repeats"] for r in repeat_rows]
    for key, label in (("net_s", "net"), ("decoder_s", "decoder alone")):
      ys = [r[key] for r in repeat_rows]
      c, b = power_fit(ns, ys) if len(ns) > 1 else (ys[0], 0.0)
      right.loglog(ns, ys, "o-", label=f"{label} (fit: repeats^{b:.2f})")
  right.set(xlabel="NAS-FPN repeats", ylabel="seconds", title="time vs num_repeats")
  right.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def print_tables(size_rows: list[dict], repeat_rows: list[dict], fit: dict,
                 args: argparse.Namespace) -> None:
  print(f"\nour forward time, batch 1, options: {', '.join(args.params_override)}; "
        f"median of {args.repeats}")
  if size_rows:
    print("\n| input | pixels | net forward [s] | load |\n|---|---|---|---|")
    for r in size_rows:
      print(f"| {r['size']} | {r['pixels']:,} | {r['net_s']:.3f} | {r['load']:.2f} |")
  if repeat_rows:
    print(f"\n| NAS-FPN repeats ({args.repeats_size}x{args.repeats_size}) | net forward [s] | "
          "decoder alone [s] | load |\n|---|---|---|---|")
    for r in repeat_rows:
      print(f"| {r['num_repeats']} | {r['net_s']:.3f} | {r['decoder_s']:.3f} | {r['load']:.2f} |")
  print("\nfits: " + ", ".join(f"{k} = {v:.3f}" for k, v in fit.items()))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", default="256,384,512,640,768,896,1024")
  p.add_argument("--num_repeats", default="1,2,3,4,5,6,7")
  p.add_argument("--repeats_size", type=int, default=640, help="input size of the repeats sweep")
  p.add_argument("--repeats", type=int, default=3, help="timed calls per point")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--params_override", action="append", default=None,
                 help=f"our config override (repeatable); default '{DEFAULT_OVERRIDE}'")
  p.add_argument("--plot", default=os.path.join(HERE, "scaling.png"))
  p.add_argument("--json", default=os.path.join(HERE, "scaling.json"))
  args = p.parse_args(argv)
  args.sizes = [int(s) for s in args.sizes.split(",") if s]
  args.num_repeats = [int(n) for n in args.num_repeats.split(",") if n]
  if args.params_override is None:
    args.params_override = [DEFAULT_OVERRIDE]
  return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
  args = parse_args(argv)
  print(f"load average at start: {os.getloadavg()}", flush=True)
  size_rows = sweep_sizes(args.sizes, args)
  repeat_rows = sweep_repeats(args.num_repeats, args)
  fit = fits(size_rows, repeat_rows)
  print_tables(size_rows, repeat_rows, fit, args)
  plot(size_rows, repeat_rows, fit, args.plot)
  result = {"sizes": size_rows, "repeats": repeat_rows, "fit": fit,
            "options": args.params_override, "cpus": os.cpu_count()}
  with open(args.json, "w") as f:
    json.dump(result, f, indent=1)
  print(f"plot: {args.plot}\n{json.dumps(fit)}")
  return result


if __name__ == "__main__":
  main()
