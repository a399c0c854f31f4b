"""nasfpn_tf next to TensorFlow Model Garden: parameters, latency, throughput, a training
step and peak memory, measured side by side in one run.

Our model runs in this process (TensorFlow 2.21 + Keras 3); Model Garden's `retinanet`
runs in a subprocess of the reference venv (`bash bench/setup_reference.sh` creates it)
through `bench/modelgarden_worker.py`. Both sides are built with the same architecture
(ResNet-50; NAS-FPN 7@256 or FPN; 4 x 256 head; levels 3-7; 91 classes; 3 x 3 anchors;
pre-NMS top-k 5000) and timed the same way: each call is traced and run `--warmup`
times, then the two sides take turns, one timed call each (the order alternating
every round), `--repeats` rounds, so that the load of a shared machine falls on both
alike. Reported: median and (min-max) of the timed calls, and ours / Model Garden's.

What is timed:
  net      backbone + decoder + head, `tf.function` of the forward pass (ours with
           `jit_compile=runtime.jit_compile`, Model Garden's without XLA);
  full     net + post-processing (decoding, per-level top-k, NMS): ours
           `model.predict_on_batch` as a user calls it, Model Garden's
           `model(images, image_shape, training=False)` under `tf.function`;
  train    one optimizer step (forward, loss, gradients, SGD momentum update): ours
           `model.train_on_batch` after the trainer's `build_compiled_model` (which
           compiles with `runtime.jit_compile`), Model Garden's `RetinaNetTask.train_step`
           under `tf.function`; random targets with ~1% positive anchors;
  peak RSS VmHWM of each process, reset before each measurement.
Weights are random on both sides: with the class prior of 0.01 almost no score passes the
0.05 threshold, so NMS has little to do; a trained model's post-processing costs more.

Run (about 25 minutes on 2 CPUs for everything):
  bash bench/setup_reference.sh
  python bench/compare_modelgarden.py
  python bench/compare_modelgarden.py --configs nasfpn --sizes 384 --repeats 3  # quick
  python bench/compare_modelgarden.py --params_override runtime.jit_compile=false

The last line printed is one JSON object (ratios and parameter counts of the NAS-FPN
config, and every measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import modelgarden_worker as worker  # noqa: E402  (standard library only at import)

CONFIGS = {
    "nasfpn": {"file": "configs/retinanet_r50_nasfpn_640_coco.yaml", "decoder": "nasfpn",
               "title": "R-50 + NAS-FPN 7@256", "num_repeats": 7},
    "fpn": {"file": "configs/retinanet_r50_fpn_640_coco.yaml", "decoder": "fpn",
            "title": "R-50 + FPN", "num_repeats": 1},
}
PARAM_TOLERANCE = 1e-3
DEFAULT_OVERRIDE = "runtime.jit_compile=false"


# ----------------------------------------------------------------------------- our side

def random_targets(batch: int, num_anchors: int, num_classes: int, seed: int = 0) -> dict:
  """Our target format for random anchors: ~1% positives, the rest background (-1)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  positive = rng.random((batch, num_anchors)) < 0.01
  classes = rng.integers(1, num_classes, (batch, num_anchors))
  return {"cls_targets": np.where(positive, classes, -1).astype("int32"),
          "box_targets": rng.normal(0.0, 0.1, (batch, num_anchors, 4)).astype("float32")}


class OursRunner:
  """The in-process twin of `modelgarden_worker.ModelGardenRunner` for nasfpn_tf."""

  def __init__(self, overrides: Sequence[str]):
    self.overrides = list(overrides)
    self.model = self.step = None
    self.jit = False
    self.full_path = ""

  def build(self, decoder: str, size: int, num_repeats: int = 7, filters: int = 256,
            num_classes: int = 91) -> dict:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from nasfpn_tf import trainer  # pylint: disable=import-outside-toplevel
    from nasfpn_tf.configs.loading import load_config  # pylint: disable=import-outside-toplevel
    from nasfpn_tf.modeling.factory import count_params  # pylint: disable=import-outside-toplevel

    self.release()
    config = load_config(os.path.join(ROOT, CONFIGS[decoder]["file"]), [
        f"task.model.input_size=[{size},{size}]", f"task.model.num_classes={num_classes}",
        f"task.model.decoder.filters={filters}", f"task.model.head.filters={filters}",
        f"task.model.decoder.num_repeats={num_repeats}",
        # The COCO configs are GPU recipes (mirrored, float16); Model Garden runs one device
        # in float32 here, and CPUs compute float16 slowly.
        "runtime.strategy=default", "runtime.mixed_precision_dtype=float32", *self.overrides])
    strategy = tf.distribute.get_strategy()
    trainer.set_precision_policy(config, strategy)
    self.model = trainer.build_compiled_model(config, strategy)
    self.jit = bool(config.runtime.jit_compile)
    self._calibrate_batch_norm(size)
    return count_params(self.model)

  def _calibrate_batch_norm(self, size: int) -> None:
    """Moving statistics := batch statistics of one random batch (see the worker's doc)."""
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    norms = [m for m in self.model._flatten_layers()  # pylint: disable=protected-access
             if isinstance(m, keras.layers.BatchNormalization)]
    momenta = [n.momentum for n in norms]
    for n in norms:
      n.momentum = 0.0
    self.model(tf.random.stateless_uniform([2, size, size, 3], [3, 4], 0.0, 255.0),
               training=True)
    for n, m in zip(norms, momenta):
      n.momentum = m

  def prepare(self, kind: str, batch: int, size: int, warmup: int) -> float:
    self.step = self._make_step(kind, batch, size)
    first = worker.timed(self.step)
    for _ in range(warmup):
      self.step()
    return first

  def run(self) -> float:
    return worker.timed(self.step)

  def release(self) -> None:
    import keras  # pylint: disable=import-outside-toplevel

    self.model = self.step = None
    keras.backend.clear_session()

  def _make_step(self, kind: str, batch: int, size: int) -> Callable[[], Any]:
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    images = np.random.default_rng(1).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    if kind == "net":
      fn = tf.function(lambda x: self.model(x, training=False), jit_compile=self.jit)
      x = tf.constant(images)
      return lambda: worker._materialise(fn(x))  # pylint: disable=protected-access
    if kind == "full":
      return self._full_step(images)
    if kind == "post":
      return self._post_step(batch, size)
    if kind == "train":
      y = random_targets(batch, self.model.num_anchors, self.model.num_classes)
      return lambda: self.model.train_on_batch(images, y)
    raise ValueError(f"unknown kind '{kind}'")

  def _post_step(self, batch: int, size: int) -> Callable[[], Any]:
    """Our detection generator on `synthetic_head_outputs` (flattened level-major)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    a = self.model.num_anchors // sum((size // 2 ** l) ** 2 for l in range(3, 8))
    levels = worker.synthetic_head_outputs(batch, size, self.model.num_classes, a)
    cls = tf.constant(np.concatenate([c.reshape(batch, -1, c.shape[-1]) for c, _ in levels], 1))
    box = tf.constant(np.concatenate([d.reshape(batch, -1, 4) for _, d in levels], 1))
    anchors = tf.constant(self.model.anchors, tf.float32)
    fn = tf.function(lambda: self.model.detection_generator(cls, box, anchors))
    return lambda: worker._materialise(fn())  # pylint: disable=protected-access

  def _full_step(self, images) -> Callable[[], Any]:
    """`model.predict_on_batch`; where XLA cannot compile it (NMS has no XLA kernel), the
    network alone under XLA and post-processing without, as `predict_step` would do."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    try:
      self.model.predict_on_batch(images)
      self.full_path = "model.predict_on_batch"
      return lambda: self.model.predict_on_batch(images)
    except tf.errors.OpError:
      if not self.jit:
        raise
      self.model.predict_function = None
    net = tf.function(lambda x: self.model(x, training=False), jit_compile=True)
    gen, anchors = self.model.detection_generator, tf.constant(self.model.anchors, tf.float32)

    @tf.function(jit_compile=False)
    def detect(x):
      out = net(x)
      return gen(out["cls_outputs"], out["box_outputs"], anchors)

    self.full_path = "XLA net + detection generator (predict_on_batch fails under XLA)"
    x = tf.constant(images)
    return lambda: worker._materialise(detect(x))  # pylint: disable=protected-access


# ----------------------------------------------------------------------------- Model Garden

class ReferenceRunner:
  """Proxy for `ModelGardenRunner` in a subprocess of the reference venv."""

  def __init__(self, python: str):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    self.log = tempfile.NamedTemporaryFile("w+", prefix="modelgarden_worker_", suffix=".log",
                                           delete=False)
    self.proc = subprocess.Popen([python, os.path.join(HERE, "modelgarden_worker.py")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, env=env, cwd=HERE)

  def call(self, op: str, **request) -> dict:
    self.proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
    self.proc.stdin.flush()
    for line in self.proc.stdout:
      if line.startswith(worker.REPLY_TAG):
        answer = json.loads(line[len(worker.REPLY_TAG):])
        if not answer.pop("ok"):
          raise RuntimeError(f"Model Garden worker, op '{op}': {answer['error']}")
        return answer
    raise RuntimeError(f"Model Garden worker exited during op '{op}'; "
                       f"its log ({self.log.name}) ends with:\n{self._log_tail()}")

  def _log_tail(self, lines: int = 30) -> str:
    self.log.flush()
    with open(self.log.name) as f:
      return "".join(f.readlines()[-lines:])

  def build(self, **kw) -> dict:
    return self.call("build", **kw)

  def prepare(self, **kw) -> float:
    return self.call("prepare", **kw)["first_s"]

  def run(self) -> float:
    return self.call("run")["seconds"]

  def release(self) -> None:
    self.call("release")

  def reset_peak_rss(self) -> None:
    self.call("reset_peak_rss")

  def peak_rss_mib(self) -> float:
    return self.call("peak_rss")["peak_rss_mib"]

  def close(self) -> None:
    if self.proc.poll() is None:
      self.call("quit")
      self.proc.wait(timeout=60)


class LocalSide:
  """Adds the memory calls of `ReferenceRunner` to the in-process runner."""

  def __init__(self, runner: OursRunner):
    self.runner = runner

  def __getattr__(self, name: str):
    return getattr(self.runner, name)

  def reset_peak_rss(self) -> None:
    worker.reset_peak_rss()

  def peak_rss_mib(self) -> float:
    return worker.peak_rss_mib()


# ----------------------------------------------------------------------------- measuring

@dataclasses.dataclass
class Timing:
  """Timed calls of one side, with the first (tracing / compiling) call and the peak RSS."""
  seconds: list
  first_s: float
  peak_rss_mib: float
  load: float  # 1-minute load average when the timed calls ended

  @property
  def median(self) -> float:
    return statistics.median(self.seconds)


def measure(sides: dict, kind: str, batch: int, size: int, warmup: int,
            repeats: int) -> dict[str, Timing]:
  """Prepares `kind` on every side, then times them in alternating turns."""
  first = {}
  for name, side in sides.items():
    side.reset_peak_rss()
    first[name] = side.prepare(kind=kind, batch=batch, size=size, warmup=warmup)
  seconds = {name: [] for name in sides}
  names = list(sides)
  for r in range(repeats):
    for name in (names if r % 2 == 0 else names[::-1]):
      seconds[name].append(sides[name].run())
  load = os.getloadavg()[0]
  out = {name: Timing(seconds[name], first[name], sides[name].peak_rss_mib(), load)
         for name in sides}
  print(f"  {kind:5s} b{batch} {size}: " + "  ".join(
      f"{n} {t.median:.3f}s" for n, t in out.items()) + f"  (load {load:.2f})", flush=True)
  return out


def check_params(ours: dict, ref: dict, title: str) -> None:
  """Stops the run when the two models differ by more than 0.1% in either count."""
  for key in ("params_total", "params_total_all"):
    diff = abs(ours[key] - ref[key]) / ref[key]
    if diff > PARAM_TOLERANCE:
      parts = {k: (ours[k], ref[k]) for k in ours if k.startswith("params_")}
      raise SystemExit(f"{title}: {key} differs by {diff:.2%} (ours {ours[key]:,}, Model "
                       f"Garden {ref[key]:,}); per part (ours, Model Garden): {parts}")


def bench_config(name: str, sides: dict, args: argparse.Namespace) -> dict:
  """All measurements of one architecture; returns them keyed by metric."""
  spec = CONFIGS[name]
  build = {"decoder": spec["decoder"], "num_repeats": spec["num_repeats"], "filters": 256,
           "num_classes": 91}
  results: dict[str, Any] = {}
  for i, size in enumerate(args.sizes):
    print(f"{spec['title']} at {size}: building", flush=True)
    counts = {n: s.build(size=size, **build) for n, s in sides.items()}
    if i == 0:
      check_params(counts["ours"], counts["reference"], spec["title"])
      results["params"] = counts
    timed = lambda kind, batch: measure(sides, kind, batch, size, args.warmup, args.repeats)
    results[f"net_b1_{size}"] = timed("net", 1)
    results[f"full_b1_{size}"] = timed("full", 1)
    results[f"post_b1_{size}"] = timed("post", 1)
    if size == args.sizes[0]:
      results[f"net_b{args.throughput_batch}_{size}"] = timed("net", args.throughput_batch)
      results[f"train_b{args.train_batch}_{size}"] = timed("train", args.train_batch)
  results["full_path"] = sides["ours"].full_path
  for side in sides.values():
    side.release()
  return results


# ----------------------------------------------------------------------------- reporting

def _cell(t: Timing) -> str:
  return f"{t.median:.3f} ({min(t.seconds):.3f}-{max(t.seconds):.3f})"


def _rows(results: dict, args: argparse.Namespace) -> list[tuple[str, str, str, float]]:
  """(metric, ours, Model Garden, ratio) rows of one config."""
  p = results["params"]
  rows = [("parameters, trainable", f"{p['ours']['params_total']:,}",
           f"{p['reference']['params_total']:,}",
           p["ours"]["params_total"] / p["reference"]["params_total"]),
          ("parameters, with BN statistics", f"{p['ours']['params_total_all']:,}",
           f"{p['reference']['params_total_all']:,}",
           p["ours"]["params_total_all"] / p["reference"]["params_total_all"])]
  for kind, label in (("net", "net forward"), ("full", "full forward"),
                      ("post", "post-processing alone, synthetic scores,")):
    for size in args.sizes:
      t = results[f"{kind}_b1_{size}"]
      rows.append((f"{label}, batch 1, {size} [s]", _cell(t["ours"]), _cell(t["reference"]),
                   t["ours"].median / t["reference"].median))
  size, b = args.sizes[0], args.throughput_batch
  t = results[f"net_b{b}_{size}"]
  rows.append((f"net throughput, batch {b}, {size} [img/s] (higher is better)",
               f"{b / t['ours'].median:.2f}", f"{b / t['reference'].median:.2f}",
               t["reference"].median / t["ours"].median))
  train = results[f"train_b{args.train_batch}_{size}"]
  rows.append((f"train step, batch {args.train_batch}, {size} [s]", _cell(train["ours"]),
               _cell(train["reference"]), train["ours"].median / train["reference"].median))
  rows.append((f"first train step (trace + compile) [s]", f"{train['ours'].first_s:.1f}",
               f"{train['reference'].first_s:.1f}",
               train["ours"].first_s / train["reference"].first_s))
  rows += _memory_rows(results, args)
  return rows


def _memory_rows(results: dict, args: argparse.Namespace) -> list:
  size = args.sizes[0]
  inference = [k for k in results if k.startswith(("net_", "full_", "post_"))
               and k != "full_path"]
  peak = {n: max(results[k][n].peak_rss_mib for k in inference) for n in ("ours", "reference")}
  train = results[f"train_b{args.train_batch}_{size}"]
  return [("peak RSS, inference [MiB]", f"{peak['ours']:.0f}", f"{peak['reference']:.0f}",
           peak["ours"] / peak["reference"]),
          (f"peak RSS, train step batch {args.train_batch} [MiB]",
           f"{train['ours'].peak_rss_mib:.0f}", f"{train['reference'].peak_rss_mib:.0f}",
           train["ours"].peak_rss_mib / train["reference"].peak_rss_mib)]


def print_table(all_results: dict, args: argparse.Namespace, loads: list) -> None:
  print(f"\nnasfpn_tf vs Model Garden: {os.cpu_count()} CPUs, our options: "
        f"{', '.join(args.params_override) or '(config defaults)'}; load average "
        f"(1 min) {min(loads):.2f}-{max(loads):.2f}; median (min-max) of {args.repeats} "
        f"interleaved runs after {args.warmup} warm-up")
  for name, results in all_results.items():
    print(f"\n{CONFIGS[name]['title']}  (ours full forward: {results['full_path']})")
    rows = _rows(results, args)
    width = max(len(r[0]) for r in rows)
    print(f"| {'metric'.ljust(width)} | ours | Model Garden | ours / MG |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for metric, ours, ref, ratio in rows:
      print(f"| {metric.ljust(width)} | {ours} | {ref} | {ratio:.2f} |")


def summary(all_results: dict, args: argparse.Namespace, loads: list) -> dict:
  """The JSON line: headline ratios of the NAS-FPN config (else the first one), and all data."""
  name = "nasfpn" if "nasfpn" in all_results else next(iter(all_results))
  r, size = all_results[name], args.sizes[0]
  ratio = lambda key: r[key]["ours"].median / r[key]["reference"].median
  out = {"config": name, "size": size,
         f"net_forward_ratio_{size}": ratio(f"net_b1_{size}"),
         f"full_forward_ratio_{size}": ratio(f"full_b1_{size}"),
         f"postprocess_ratio_{size}": ratio(f"post_b1_{size}"),
         "train_step_ratio": ratio(f"train_b{args.train_batch}_{size}"),
         "params_ours": r["params"]["ours"]["params_total"],
         "params_reference": r["params"]["reference"]["params_total"],
         "params_ours_all": r["params"]["ours"]["params_total_all"],
         "params_reference_all": r["params"]["reference"]["params_total_all"],
         "ours_options": args.params_override, "loadavg_range": [min(loads), max(loads)],
         "cpus": os.cpu_count()}
  out["measurements"] = {n: {k: _plain(v) for k, v in res.items()} for n, res in all_results.items()}
  return out


def _plain(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, Timing):
    return dataclasses.asdict(value)
  return value


# ----------------------------------------------------------------------------- main

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="nasfpn,fpn", help="comma-separated: nasfpn, fpn")
  p.add_argument("--sizes", default="640,384,256",
                 help="comma-separated input sizes; throughput and train step use the first")
  p.add_argument("--repeats", type=int, default=5, help="timed calls per side")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
  p.add_argument("--throughput_batch", type=int, default=8)
  p.add_argument("--train_batch", type=int, default=4)
  p.add_argument("--params_override", action="append", default=None,
                 help=f"our config override (repeatable); default '{DEFAULT_OVERRIDE}'")
  p.add_argument("--reference_python",
                 default=os.path.join(HERE, ".venv-modelgarden", "bin", "python"))
  args = p.parse_args(argv)
  args.configs = [c for c in args.configs.split(",") if c]
  for c in args.configs:
    if c not in CONFIGS:
      p.error(f"--configs: '{c}' is not one of {sorted(CONFIGS)}")
  args.sizes = [int(s) for s in args.sizes.split(",") if s]
  if args.params_override is None:
    args.params_override = [DEFAULT_OVERRIDE]
  if not os.path.exists(args.reference_python):
    p.error(f"no reference environment at {args.reference_python}: "
            "run `bash bench/setup_reference.sh` first")
  return args


def _loads(all_results: dict) -> list[float]:
  """Every load average recorded with a measurement."""
  return [t.load for res in all_results.values() for v in res.values()
          if isinstance(v, dict) for t in v.values() if isinstance(t, Timing)]


def main(argv: Optional[Sequence[str]] = None) -> dict:
  args = parse_args(argv)
  print(f"load average at start: {os.getloadavg()}", flush=True)
  reference = ReferenceRunner(args.reference_python)
  sides = {"ours": LocalSide(OursRunner(args.params_override)), "reference": reference}
  try:
    all_results = {}
    for name in args.configs:
      all_results[name] = bench_config(name, sides, args)
  finally:
    reference.close()
  loads = _loads(all_results)
  print_table(all_results, args, loads)
  out = summary(all_results, args, loads)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
