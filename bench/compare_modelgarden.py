"""nasfpn_tf next to TensorFlow Model Garden: parameters, latency, throughput, a training
step and peak memory, measured side by side in one run.

Our model runs in this process (TensorFlow 2.21 + Keras 3); Model Garden's `retinanet`
(tf-models-official 2.20, TensorFlow 2.20 + tf-keras) runs in a subprocess of the
reference venv (`bash bench/setup_reference.sh` creates it) through
`bench/modelgarden_worker.py`; a second variant of ours with other options a user can set
(`--alt_params_override`, default `auto` precision: bfloat16 on CPUs with AVX-512 BF16 or AMX) runs in a subprocess of this
interpreter. All are built with the same architecture (ResNet-50; NAS-FPN 7@256 or FPN;
4 x 256 head; levels 3-7; 91 classes; 3 x 3 anchors; pre-NMS top-k 5000, Model Garden's
'v2' NMS) and timed the same way: each call is traced and run `--warmup` more times, then
the sides take turns, one timed call each (the order reversed every other round),
`--repeats` rounds, so that the load of a shared machine falls on all alike. Reported:
median and (min-max) of the timed calls and the ratio ours / Model Garden's.

What is timed:
  net    backbone + decoder + head: `tf.function` of the forward pass (ours with
         `jit_compile=runtime.jit_compile`, Model Garden's without XLA, its default);
  full   net + post-processing (decoding, top-k, NMS): ours `model.predict_on_batch`
         as a user calls it, Model Garden's `model(images, image_shape, training=False)`
         under `tf.function`;
  post   the detection generator alone on identical synthetic head outputs (about 0.1%
         of the scores above the 0.05 threshold, as from a trained detector), since
         with random weights the number of NMS candidates is an accident;
  train  one optimizer step (forward, loss, gradients, SGD momentum update) at
         `--train_size`: ours `model.train_on_batch` after the trainer's
         `build_compiled_model` (compiled with `runtime.jit_compile`; the same cost per
         step as `fit`), Model Garden's `RetinaNetTask.train_step` under `tf.function`;
         random targets with ~1% positive anchors;
  RSS    peak resident memory (VmHWM) of each process, reset before each measurement.
After building, every batch norm's moving statistics are set to one random batch's
statistics on both sides, so that inference activations have a trained network's scale.

Run (about 40 minutes on 2 CPUs for everything):
  bash bench/setup_reference.sh
  python bench/compare_modelgarden.py
  python bench/compare_modelgarden.py --configs nasfpn --sizes 384 --repeats 3  # quick
  python bench/compare_modelgarden.py --alt_params_override runtime.jit_compile=true

The last line printed is one JSON object: ratios of the NAS-FPN config (keys ending in
`_alt` for the second variant), parameter counts, and every measurement.
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
# Like for like with Model Garden's defaults (float32, no XLA): the headline ratios.
DEFAULT_OVERRIDE = "runtime.jit_compile=false"
# The default precision: bfloat16 where the hardware has it (AVX-512 BF16 / AMX CPUs run it
# natively), float32 elsewhere (nasfpn_tf/precision.py).
DEFAULT_ALT_OVERRIDE = "runtime.mixed_precision_dtype=auto"
MG_VERSION = "tf-models-official 2.20.0"


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
    worker.calibrate_batch_norm(norms, lambda: self.model(
        tf.random.stateless_uniform([2, size, size, 3], [3, 4], 0.0, 255.0), training=True))

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


# ----------------------------------------------------------------------------- other processes

class RemoteRunner:
  """Proxy for a runner served by `modelgarden_worker.serve` in a subprocess."""

  def __init__(self, command: list[str], env: Optional[dict] = None, label: str = "worker"):
    self.label = label
    self.log = tempfile.NamedTemporaryFile("w+", prefix=f"bench_{label}_", suffix=".log",
                                           delete=False)
    self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, cwd=HERE,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})

  def call(self, op: str, **request) -> dict:
    self.proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
    self.proc.stdin.flush()
    for line in self.proc.stdout:
      if line.startswith(worker.REPLY_TAG):
        answer = json.loads(line[len(worker.REPLY_TAG):])
        if not answer.pop("ok"):
          raise RuntimeError(f"{self.label}, op '{op}': {answer['error']}")
        return answer
    raise RuntimeError(f"{self.label} exited during op '{op}'; "
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

  @property
  def full_path(self) -> str:
    return self.call("info")["full_path"]

  def close(self) -> None:
    if self.proc.poll() is None:
      self.call("quit")
      self.proc.wait(timeout=60)


def reference_runner(python: str) -> RemoteRunner:
  """Model Garden in the reference venv (no path of ours: it must not see Keras 3), with
  TensorFlow's default allocator whatever ours uses."""
  env = {"PYTHONPATH": "", "TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}  # TensorFlow's default
  return RemoteRunner([python, os.path.join(HERE, "modelgarden_worker.py")],
                      env=env, label="Model Garden worker")


def alternative_runner(overrides: Sequence[str]) -> RemoteRunner:
  """Our model with other options, in a second process of this interpreter, so that its
  weights and buffers stay out of the in-process side's peak RSS."""
  command = [sys.executable, os.path.abspath(__file__), "--serve_ours"]
  for text in overrides:
    command += ["--params_override", text]
  return RemoteRunner(command, label="our alternative worker")


class LocalSide:
  """Adds the memory calls of `RemoteRunner` to the in-process runner."""

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
  """All measurements of one architecture, keyed by metric, then by side."""
  spec = CONFIGS[name]
  build = {"decoder": spec["decoder"], "num_repeats": spec["num_repeats"], "filters": 256,
           "num_classes": 91}
  results: dict[str, Any] = {}
  for i, size in enumerate(args.sizes):
    print(f"{spec['title']} at {size}: building", flush=True)
    counts = {n: s.build(size=size, **build) for n, s in sides.items()}
    if i == 0:
      for n in sides:
        if n != "reference":
          check_params(counts[n], counts["reference"], f"{spec['title']} ({n})")
      results["params"] = counts
    timed = lambda kind, batch: measure(sides, kind, batch, size, args.warmup, args.repeats)
    results[f"net_b1_{size}"] = timed("net", 1)
    results[f"full_b1_{size}"] = timed("full", 1)
    results[f"post_b1_{size}"] = timed("post", 1)
    if i == 0:
      results[f"net_b{args.throughput_batch}_{size}"] = timed("net", args.throughput_batch)
    if size == args.train_size:
      results[f"train_b{args.train_batch}_{size}"] = timed("train", args.train_batch)
  results["full_path"] = {n: s.full_path for n, s in sides.items() if n != "reference"}
  for side in sides.values():
    side.release()
  return results


# ----------------------------------------------------------------------------- reporting

def _cell(t: Timing) -> str:
  return f"{t.median:.3f} ({min(t.seconds):.3f}-{max(t.seconds):.3f})"


def _ours(results: dict) -> list[str]:
  return [n for n in results["params"] if n != "reference"]


def _time_row(label: str, by_side: dict, ours: list[str]) -> list:
  """[label, cell per side (ours..., reference), ratio per ours side]."""
  ref = by_side["reference"]
  return ([label] + [_cell(by_side[n]) for n in ours + ["reference"]]
          + [by_side[n].median / ref.median for n in ours])


def _rows(results: dict, args: argparse.Namespace) -> list[list]:
  """Table rows of one config: metric, one cell per side, one ratio per side of ours."""
  ours, p = _ours(results), results["params"]
  rows = []
  for key, label in (("params_total", "parameters, trainable"),
                     ("params_total_all", "parameters, with BN statistics")):
    rows.append([label] + [f"{p[n][key]:,}" for n in ours + ["reference"]]
                + [p[n][key] / p["reference"][key] for n in ours])
  for kind, label in (("net", "net forward"), ("full", "full forward"),
                      ("post", "post-processing alone (synthetic scores)")):
    for size in args.sizes:
      rows.append(_time_row(f"{label}, batch 1, {size} [s]", results[f"{kind}_b1_{size}"], ours))
  size, b = args.sizes[0], args.throughput_batch
  t = results[f"net_b{b}_{size}"]
  rows.append([f"net throughput, batch {b}, {size} [img/s]"]
              + [f"{b / t[n].median:.2f}" for n in ours + ["reference"]]
              + [t["reference"].median / t[n].median for n in ours])
  size = args.train_size
  train = results[f"train_b{args.train_batch}_{size}"]
  rows.append(_time_row(f"train step, batch {args.train_batch}, {size} [s]", train, ours))
  rows.append(["first train step (trace + compile) [s]"]
              + [f"{train[n].first_s:.1f}" for n in ours + ["reference"]]
              + [train[n].first_s / train["reference"].first_s for n in ours])
  return rows + _memory_rows(results, args, ours)


def _memory_rows(results: dict, args: argparse.Namespace, ours: list[str]) -> list[list]:
  inference = [k for k in results if k.startswith(("net_", "full_b", "post_"))]
  peak = {n: max(results[k][n].peak_rss_mib for k in inference) for n in ours + ["reference"]}
  train = results[f"train_b{args.train_batch}_{args.train_size}"]
  return [["peak RSS, inference [MiB]"] + [f"{peak[n]:.0f}" for n in ours + ["reference"]]
          + [peak[n] / peak["reference"] for n in ours],
          [f"peak RSS, train step batch {args.train_batch} [MiB]"]
          + [f"{train[n].peak_rss_mib:.0f}" for n in ours + ["reference"]]
          + [train[n].peak_rss_mib / train["reference"].peak_rss_mib for n in ours]]


def _resolved(overrides: Sequence[str]) -> list[str]:
  """`auto` precision shown with what it resolves to on this machine."""
  from nasfpn_tf import precision  # pylint: disable=import-outside-toplevel
  auto = "runtime.mixed_precision_dtype=auto"
  return [f"{o} = {precision.resolve('auto')[0]}" if o == auto else o for o in overrides]


def print_table(all_results: dict, args: argparse.Namespace, loads: list) -> None:
  labels = {"ours": f"ours ({', '.join(args.params_override)})",
            "ours_alt": f"ours ({', '.join(_resolved(args.alt_params_override))})"}
  print(f"\nnasfpn_tf vs Model Garden {MG_VERSION}: {os.cpu_count()} CPUs; load average (1 min) "
        f"{min(loads):.2f}-{max(loads):.2f}; median (min-max) of {args.repeats} interleaved "
        f"calls after {args.warmup + 1} untimed; throughput ratio = MG time / our time")
  for name, results in all_results.items():
    ours = _ours(results)
    print(f"\n{CONFIGS[name]['title']}; our full forward: " + "; ".join(
        f"{n}: {results['full_path'][n]}" for n in ours))
    head = [labels[n] for n in ours] + ["Model Garden"] + [f"{n} / MG" for n in ours]
    print("| metric | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for row in _rows(results, args):
      cells = row[:len(ours) + 2] + [f"{r:.2f}" for r in row[len(ours) + 2:]]
      print("| " + " | ".join(cells) + " |")


def summary(all_results: dict, args: argparse.Namespace, loads: list) -> dict:
  """The JSON line: headline ratios of the NAS-FPN config (else the first one), and all data."""
  name = "nasfpn" if "nasfpn" in all_results else next(iter(all_results))
  r, size = all_results[name], args.sizes[0]
  out = {"config": name, "size": size, "train_size": args.train_size,
         "train_batch": args.train_batch}
  for n in _ours(r):
    suffix = "" if n == "ours" else "_alt"
    ratio = lambda key: r[key][n].median / r[key]["reference"].median
    out.update({f"net_forward_ratio_{size}{suffix}": ratio(f"net_b1_{size}"),
                f"full_forward_ratio_{size}{suffix}": ratio(f"full_b1_{size}"),
                f"postprocess_ratio_{size}{suffix}": ratio(f"post_b1_{size}"),
                f"train_step_ratio{suffix}": ratio(
                    f"train_b{args.train_batch}_{args.train_size}")})
    memory = {row[0]: row for row in _memory_rows(r, args, _ours(r))}
    index = 1 + len(_ours(r)) + 1 + _ours(r).index(n)
    out[f"inference_peak_rss_ratio{suffix}"] = memory["peak RSS, inference [MiB]"][index]
    out[f"train_peak_rss_ratio{suffix}"] = memory[
        f"peak RSS, train step batch {args.train_batch} [MiB]"][index]
  out.update({"params_ours": r["params"]["ours"]["params_total"],
              "params_reference": r["params"]["reference"]["params_total"],
              "params_ours_all": r["params"]["ours"]["params_total_all"],
              "params_reference_all": r["params"]["reference"]["params_total_all"],
              "ours_options": args.params_override,
              "alt_options": _resolved(args.alt_params_override or []),
              "loadavg_range": [min(loads), max(loads)], "cpus": os.cpu_count(),
              "model_garden": MG_VERSION})
  out["measurements"] = {n: _plain(res) for n, res in all_results.items()}
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
                 help="comma-separated input sizes; throughput uses the first")
  p.add_argument("--repeats", type=int, default=5, help="timed calls per side")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
  p.add_argument("--throughput_batch", type=int, default=8)
  p.add_argument("--train_batch", type=int, default=4)
  p.add_argument("--train_size", type=int, default=384,
                 help="input size of the train step (one of --sizes): 640 at batch 4 needs "
                      "~10 GiB per process, too much for three processes in 24 GiB")
  p.add_argument("--params_override", action="append", default=None,
                 help=f"our config override (repeatable); default '{DEFAULT_OVERRIDE}'")
  p.add_argument("--alt_params_override", action="append", default=None,
                 help="overrides of a second variant of ours, timed alongside (repeatable); "
                      f"default '{DEFAULT_ALT_OVERRIDE}'; 'none' leaves it out")
  p.add_argument("--reference_python",
                 default=os.path.join(HERE, ".venv-modelgarden", "bin", "python"))
  p.add_argument("--allocator", choices=["system", "tensorflow"], default="system",
                 help="oneDNN's allocator on our sides: the system's, as our inference "
                      "modes use (nasfpn_tf/allocator.py), or TensorFlow's pool, as training "
                      "keeps (faster train step, more memory)")
  p.add_argument("--serve_ours", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.configs = [c for c in args.configs.split(",") if c]
  for c in args.configs:
    if c not in CONFIGS:
      p.error(f"--configs: '{c}' is not one of {sorted(CONFIGS)}")
  args.sizes = [int(s) for s in args.sizes.split(",") if s]
  if args.train_size not in args.sizes:
    args.train_size = args.sizes[0]
  args.params_override = args.params_override or [DEFAULT_OVERRIDE]
  args.alt_params_override = args.alt_params_override or [DEFAULT_ALT_OVERRIDE]
  if args.alt_params_override == ["none"]:
    args.alt_params_override = []
  if not args.serve_ours and not os.path.exists(args.reference_python):
    p.error(f"no reference environment at {args.reference_python}: "
            "run `bash bench/setup_reference.sh` first")
  return args


def _loads(all_results: dict) -> list[float]:
  """Every load average recorded with a measurement."""
  return [t.load for res in all_results.values() for v in res.values()
          if isinstance(v, dict) for t in v.values() if isinstance(t, Timing)]


def make_sides(args: argparse.Namespace) -> dict:
  """ours (in process), ours_alt (optional, subprocess), reference (subprocess): the
  order in which every round of timed calls starts (reversed every other round)."""
  sides = {"ours": LocalSide(OursRunner(args.params_override))}
  if args.alt_params_override:
    sides["ours_alt"] = alternative_runner(args.alt_params_override)
  sides["reference"] = reference_runner(args.reference_python)
  return sides


def main(argv: Optional[Sequence[str]] = None) -> Optional[dict]:
  args = parse_args(argv)
  if args.allocator == "system":
    # Ours only, in this process and the alternative worker (which inherits it): Model
    # Garden's side keeps TensorFlow's default; nasfpn_tf/allocator.py says why.
    from nasfpn_tf import allocator  # pylint: disable=import-outside-toplevel
    allocator.use_system_allocator()
  if args.serve_ours:
    worker.serve(OursRunner(args.params_override))
    return None
  print(f"load average at start: {os.getloadavg()}", flush=True)
  sides = make_sides(args)
  try:
    all_results = {name: bench_config(name, sides, args) for name in args.configs}
  finally:
    for side in sides.values():
      if isinstance(side, RemoteRunner):
        side.close()
  loads = _loads(all_results)
  print_table(all_results, args, loads)
  out = summary(all_results, args, loads)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
