"""Where one training step's time goes, by TensorFlow op type: ours and Model Garden's.

Builds the same R-50 + NAS-FPN 7@256 RetinaNet as `compare_modelgarden.py` on both sides
(ours in this process, Model Garden's in a subprocess of the reference venv), takes
`--warmup` steps, then profiles one step with `tf.profiler` and sums the durations of the
op events on TensorFlow's compute threads by op type. Two inter-op threads can run ops at
once, so "op time" adds up to more than the step's wall time; the shares are what matter.

It answers one question the comparison table cannot: how much of a step is convolution
(forward, and the two backward kernels) that both sides hand to the same oneDNN kernels,
and so how far any change outside the convolutions can bring the train-step ratio.

Run (about 4 minutes on 2 CPUs):
  python bench/op_profile.py [--size 384] [--batch 4] [--top 15]
The last line is one JSON object with the op times of both sides.

`--compare_optimizers` profiles only our side, the same model trained with
`optimization.FusedSGD` (one ResourceApplyKerasMomentum kernel per variable, the default)
and with Keras' own SGD (`trainer.optimizer.fused=false`), `--repeats` profiled steps
each, and prints the median op time and step wall time of both and the op types whose
time differs most (about 4 minutes).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import modelgarden_worker as worker  # noqa: E402  (standard library only at import)

_OP_TYPE = re.compile(r"^_?[A-Z][A-Za-z0-9]*$")
_NOT_OPS = {"Process", "Record", "StartRegion", "StopRegion", "Run", "ExecutorDoneCallback"}


def is_convolution(op_type: str) -> bool:
  """Forward and backward 2-D convolution kernels, fused or not (oneDNN names them _Mkl*)."""
  return "Conv2D" in op_type


def op_seconds_by_type(logdir: str) -> dict:
  """Sums op event durations of the last trace in `logdir` by op type (seconds)."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel

  path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  seconds = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue
      for event in line.events:
        op_type = plane.event_metadata[event.metadata_id].name.split(":")[-1]
        if _OP_TYPE.match(op_type) and op_type not in _NOT_OPS:
          seconds[op_type] += event.duration_ps * 1e-12
  return dict(seconds)


def profile_step(runner, size: int, batch: int, warmup: int) -> dict:
  """Builds `runner`'s NAS-FPN model, warms its train step up and profiles one more."""
  runner.build("nasfpn", size)
  runner.prepare("train", batch, size, warmup)
  return profile_once(runner)


def profile_once(runner) -> dict:
  """Profiles one call of `runner`'s prepared step: wall time and op seconds by type."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    ops = op_seconds_by_type(logdir)
  return {"wall_s": wall, "ops": ops}


def profile_reference(args: argparse.Namespace) -> dict:
  command = [args.reference_python, os.path.abspath(__file__), "--side=reference",
             f"--size={args.size}", f"--batch={args.batch}", f"--warmup={args.warmup}"]
  out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def summarise(name: str, result: dict) -> dict:
  ops = result["ops"]
  total = sum(ops.values())
  conv = sum(s for t, s in ops.items() if is_convolution(t))
  return {"side": name, "wall_s": result["wall_s"], "op_s": total, "conv_s": conv,
          "conv_share": conv / total if total else 0.0}


def print_table(ours: dict, reference: dict, top: int) -> None:
  types = sorted(set(ours["ops"]) | set(reference["ops"]),
                 key=lambda t: -(ours["ops"].get(t, 0.0) + reference["ops"].get(t, 0.0)))
  print("| op type | ours [s] | Model Garden [s] |\n|---|---|---|")
  for t in types[:top]:
    print(f"| {t} | {ours['ops'].get(t, 0.0):.3f} | {reference['ops'].get(t, 0.0):.3f} |")
  s_ours, s_ref = summarise("ours", ours), summarise("reference", reference)
  for key, label in (("op_s", "all ops"), ("conv_s", "convolutions (fwd + bwd)")):
    print(f"| **{label}** | {s_ours[key]:.3f} | {s_ref[key]:.3f} |")
  print(f"| step wall time | {ours['wall_s']:.3f} | {reference['wall_s']:.3f} |")
  print(f"\nConvolutions are {s_ref['conv_share']:.0%} of Model Garden's op time and "
        f"{s_ours['conv_share']:.0%} of ours. With convolutions as fast as Model Garden's and "
        f"every other op free, the train-step ratio could not go below ~{s_ref['conv_share']:.2f}.")


def compare_optimizers(args: argparse.Namespace) -> dict:
  """Median op time and wall time of our train step with FusedSGD and with Keras' SGD."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  import compare_modelgarden  # pylint: disable=import-outside-toplevel

  out = {}
  for name, fused in (("fused_sgd", "true"), ("keras_sgd", "false")):
    runner = compare_modelgarden.OursRunner(
        [compare_modelgarden.DEFAULT_OVERRIDE, f"trainer.optimizer.fused={fused}"])
    runs = [profile_step(runner, args.size, args.batch, args.warmup)]
    runs += [profile_once(runner) for _ in range(args.repeats - 1)]
    runner.release()
    types = set().union(*(r["ops"] for r in runs))
    out[name] = {"wall_s": float(np.median([r["wall_s"] for r in runs])),
                 "op_s": float(np.median([sum(r["ops"].values()) for r in runs])),
                 "ops": {t: float(np.median([r["ops"].get(t, 0.0) for r in runs]))
                         for t in types},
                 "loadavg": os.getloadavg()[0]}
  fused, plain = out["fused_sgd"], out["keras_sgd"]
  types = sorted(set(fused["ops"]) | set(plain["ops"]),
                 key=lambda t: -abs(plain["ops"].get(t, 0.0) - fused["ops"].get(t, 0.0)))
  print(f"Our train step, batch {args.batch}, {args.size}x{args.size}, float32, median of "
        f"{args.repeats} profiled steps (load {fused['loadavg']:.2f} / {plain['loadavg']:.2f})\n")
  print("| op type | FusedSGD [s] | Keras SGD [s] |\n|---|---|---|")
  for t in types[:args.top]:
    print(f"| {t} | {fused['ops'].get(t, 0.0):.3f} | {plain['ops'].get(t, 0.0):.3f} |")
  print(f"| **all ops** | {fused['op_s']:.3f} | {plain['op_s']:.3f} |")
  print(f"| step wall time | {fused['wall_s']:.3f} | {plain['wall_s']:.3f} |")
  return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", type=int, default=384)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--top", type=int, default=15, help="op types to list")
  p.add_argument("--compare_optimizers", action="store_true",
                 help="our side only: FusedSGD against Keras' SGD")
  p.add_argument("--repeats", type=int, default=3,
                 help="profiled steps per optimizer with --compare_optimizers")
  p.add_argument("--side", choices=("both", "reference"), default="both",
                 help=argparse.SUPPRESS)
  p.add_argument("--reference_python",
                 default=os.path.join(HERE, ".venv-modelgarden", "bin", "python"))
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  if args.side == "reference":
    print(json.dumps(profile_step(worker.ModelGardenRunner(), args.size, args.batch,
                                  args.warmup)))
    return
  if args.compare_optimizers:
    out = compare_optimizers(args)
    print(json.dumps({k: {f: v[f] for f in ("wall_s", "op_s", "loadavg")}
                      for k, v in out.items()}))
    return
  import compare_modelgarden  # pylint: disable=import-outside-toplevel

  ours = profile_step(compare_modelgarden.OursRunner([compare_modelgarden.DEFAULT_OVERRIDE]),
                      args.size, args.batch, args.warmup)
  reference = profile_reference(args)
  print(f"R-50 + NAS-FPN 7@256, one train step, batch {args.batch}, {args.size}x{args.size}\n")
  print_table(ours, reference, args.top)
  print(json.dumps({"ours": summarise("ours", ours), "reference": summarise("reference", reference),
                    "ops_ours": ours["ops"], "ops_reference": reference["ops"]}))


if __name__ == "__main__":
  main()
