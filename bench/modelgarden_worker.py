"""Model Garden side of `bench/compare_modelgarden.py`; runs inside the reference venv.

The driver starts this file with the interpreter of `bench/.venv-modelgarden`
(see `bench/setup_reference.sh`) and sends one JSON request per line on stdin; every
answer is one line on stdout starting with `REPLY_TAG` (TensorFlow's own chatter
goes to stderr). Requests, the same ones the driver's in-process runner for our
model answers:

  {"op": "build", "decoder": "nasfpn" | "fpn", "size": 640, "num_repeats": 7,
   "filters": 256, "num_classes": 91}                     -> parameter counts
  {"op": "prepare", "kind": "net" | "full" | "post" | "train", "batch": 1,
   "size": 640, "warmup": 2}                              -> first-call seconds
  {"op": "run"}                                           -> seconds of one timed call
  {"op": "peak_rss"}                                      -> peak RSS (MiB) since last reset
  {"op": "info"}                                          -> how "full" was run
  {"op": "reset_peak_rss"} / {"op": "release"} / {"op": "quit"}

The model is Model Garden's own: `official.vision.modeling.factory.build_retinanet`
on the `retinanet_resnetfpn_coco` experiment with the backbone, decoder, head and
detection generator set as in the brief (ResNet-50, NAS-FPN `num_repeats`@`filters`
or FPN, 4 x 256 head, levels 3-7, 3 x 3 anchors, pre-NMS top-k 5000, 'v2' NMS), and
its training step is `RetinaNetTask.train_step` under `tf.function` (no XLA, as
Model Garden's trainer runs it by default on CPU).

After building, both sides set every batch-norm's moving statistics to the batch
statistics of one random batch (`calibrate_batch_norm`): with the initial statistics
(mean 0, variance 1) the activations of an untrained ResNet grow layer after layer, and
the number of scores above the detection threshold, hence the NMS cost, would be an
accident of the initialisation. "post" times the detection generator alone on
`synthetic_head_outputs`, the same numbers on both sides.

Only the standard library is imported at module level, so the driver can reuse the
memory and protocol helpers below without TensorFlow 2.20 on its path.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
import time
from typing import Any, Callable, Optional

REPLY_TAG = "@@bench "


# ----------------------------------------------------------------------------- memory

def peak_rss_mib() -> float:
  """Peak resident set size of this process (VmHWM), in MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def reset_peak_rss() -> None:
  """Returns freed heap to the OS, then resets VmHWM to the current RSS.

  Without `malloc_trim` the peak of an earlier measurement would linger as resident,
  freed-but-cached memory; writing "5" to clear_refs (Linux >= 4.0) restarts the peak.
  """
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except OSError:
    pass
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


# ----------------------------------------------------------------------------- protocol

def timed(fn: Callable[[], Any]) -> float:
  """Wall seconds of `fn()`; `fn` must return only once its results are computed."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def calibrate_batch_norm(norms: list, run_batch: Callable[[], Any]) -> None:
  """Moving statistics := batch statistics of `run_batch()` (a training-mode call): momentum
  0 for that one call, then back. Shared by both sides of the benchmark."""
  momenta = [n.momentum for n in norms]
  for n in norms:
    n.momentum = 0.0
  run_batch()
  for n, m in zip(norms, momenta):
    n.momentum = m


def reply(payload: dict) -> None:
  sys.stdout.write(REPLY_TAG + json.dumps(payload) + "\n")
  sys.stdout.flush()


def serve(runner: Any) -> None:
  """Answers requests from stdin with `runner` until "quit" or end of input."""
  for line in sys.stdin:
    request = json.loads(line)
    op = request.pop("op")
    if op == "quit":
      reply({"ok": True})
      return
    try:
      reply({"ok": True, **dispatch(runner, op, request)})
    except Exception as e:  # The driver prints it and stops: a benchmark must fail loudly.
      reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


def dispatch(runner: Any, op: str, request: dict) -> dict:
  """Maps one request onto the runner interface shared with the driver."""
  if op == "build":
    return runner.build(**request)
  if op == "prepare":
    return {"first_s": runner.prepare(**request)}
  if op == "run":
    return {"seconds": runner.run()}
  if op == "peak_rss":
    return {"peak_rss_mib": peak_rss_mib()}
  if op == "reset_peak_rss":
    reset_peak_rss()
    return {}
  if op == "release":
    runner.release()
    return {}
  if op == "info":
    return {"full_path": getattr(runner, "full_path", "")}
  raise ValueError(f"unknown op '{op}'")


# ----------------------------------------------------------------------------- shared inputs

SYNTHETIC_LOGIT_MEAN, SYNTHETIC_LOGIT_STD = -7.0, 1.3


def synthetic_head_outputs(batch: int, size: int, num_classes: int, anchors_per_location: int,
                           seed: int = 0) -> list[tuple[Any, Any]]:
  """Per level 3..7, (logits [B, H, W, A, C], box deltas [B, H, W, A, 4]) as float32 numpy.

  Logits ~ N(-7, 1.3): about 0.1% of (anchor, class) scores pass the 0.05 threshold,
  thousands of NMS candidates per 640 x 640 image, as from a trained detector.
  `RandomState` (numpy's frozen legacy stream) so that both venvs draw the same numbers.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.RandomState(seed)
  out = []
  for level in range(3, 8):
    side = size // 2 ** level
    shape = (batch, side, side, anchors_per_location)
    logits = SYNTHETIC_LOGIT_MEAN + SYNTHETIC_LOGIT_STD * rng.standard_normal(
        shape + (num_classes,))
    deltas = 0.1 * rng.standard_normal(shape + (4,))
    out.append((logits.astype("float32"), deltas.astype("float32")))
  return out


# ----------------------------------------------------------------------------- Model Garden

def _model_config(decoder: str, size: int, num_repeats: int, filters: int, num_classes: int,
                  depth: int = 50):
  """The `retinanet_resnetfpn_coco` experiment, set to the benchmarked architecture
  (also used by tests/checkpoints/modelgarden_writer.py with smaller ones)."""
  from official.core import exp_factory  # pylint: disable=import-outside-toplevel

  exp = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
  model = exp.task.model
  model.num_classes = num_classes
  model.input_size = [size, size, 3]
  model.min_level, model.max_level = 3, 7
  model.backbone.type = "resnet"
  model.backbone.resnet.model_id = depth
  model.anchor.num_scales, model.anchor.aspect_ratios = 3, [0.5, 1.0, 2.0]
  model.anchor.anchor_size = 4.0
  model.head.num_convs, model.head.num_filters = 4, filters
  model.detection_generator.pre_nms_top_k = 5000
  model.detection_generator.nms_version = "v2"
  model.norm_activation.norm_momentum, model.norm_activation.norm_epsilon = 0.99, 1e-3
  if decoder == "nasfpn":
    model.decoder.type = "nasfpn"
    model.decoder.nasfpn.num_repeats, model.decoder.nasfpn.num_filters = num_repeats, filters
  elif decoder == "fpn":
    model.decoder.type = "fpn"
    model.decoder.fpn.num_filters = filters
  else:
    raise ValueError(f"decoder '{decoder}' is not 'nasfpn' or 'fpn'")
  return exp.task


def _count(variables) -> int:
  return int(sum(v.shape.num_elements() for v in variables))


def random_targets(model, batch: int, size: int, num_classes: int, seed: int = 0) -> dict:
  """Model Garden's label format for random anchors: ~1% positives, the rest negative."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  rng = tf.random.Generator.from_seed(seed)
  a = model.head.get_config()["num_anchors_per_location"]
  cls, box, flat_pos = {}, {}, []
  for level in range(3, 8):
    side = size // 2 ** level
    positive = rng.uniform([batch, side, side, a]) < 0.01
    classes = rng.uniform([batch, side, side, a], 1, num_classes, dtype=tf.int32)
    cls[str(level)] = tf.where(positive, classes, 0)
    box[str(level)] = rng.normal([batch, side, side, a * 4], stddev=0.1)
    flat_pos.append(tf.reshape(tf.cast(positive, tf.float32), [batch, -1]))
  box_weights = tf.concat(flat_pos, axis=1)
  return {"cls_targets": cls, "box_targets": box, "box_weights": box_weights,
          "cls_weights": tf.ones_like(box_weights)}


class ModelGardenRunner:
  """Builds Model Garden's RetinaNet and times its inference and training calls."""

  def __init__(self):
    self.task = self.model = self.step = None
    self.num_classes = 0

  def build(self, decoder: str, size: int, num_repeats: int = 7, filters: int = 256,
            num_classes: int = 91) -> dict:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from official.vision.tasks import retinanet  # pylint: disable=import-outside-toplevel

    self.release()
    self.task = retinanet.RetinaNetTask(
        _model_config(decoder, size, num_repeats, filters, num_classes))
    self.model = self.task.build_model()
    self.num_classes = num_classes
    # Creates every weight (Model Garden builds the head lazily).
    self.model(tf.zeros([1, size, size, 3]), training=False)
    self._calibrate_batch_norm(size)
    parts = {"backbone": self.model.backbone, "decoder": self.model.decoder,
             "head": self.model.head}
    counts = {}
    for name, part in parts.items():
      counts[f"params_{name}"] = _count(part.trainable_weights)
      counts[f"params_{name}_all"] = _count(part.weights)
    counts["params_total"] = sum(counts[f"params_{n}"] for n in parts)
    counts["params_total_all"] = sum(counts[f"params_{n}_all"] for n in parts)
    return counts

  def _calibrate_batch_norm(self, size: int) -> None:
    """Moving statistics := batch statistics of one random batch (momentum 0, one step)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    norms = [m for m in self.model.submodules
             if isinstance(m, tf_keras.layers.BatchNormalization)]
    calibrate_batch_norm(norms, lambda: self.model(
        tf.random.stateless_uniform([2, size, size, 3], [3, 4], 0.0, 255.0), training=True))

  def prepare(self, kind: str, batch: int, size: int, warmup: int) -> float:
    """Traces the call of `kind` for [batch, size, size, 3]; runs it `warmup` more times."""
    self.step = self._make_step(kind, batch, size)
    first = timed(self.step)
    for _ in range(warmup):
      self.step()
    return first

  def run(self) -> float:
    return timed(self.step)

  def release(self) -> None:
    import tf_keras  # pylint: disable=import-outside-toplevel

    self.task = self.model = self.step = None
    tf_keras.backend.clear_session()
    gc.collect()

  def _make_step(self, kind: str, batch: int, size: int) -> Callable[[], Any]:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    images = tf.random.stateless_uniform([batch, size, size, 3], [1, 2], 0.0, 255.0)
    if kind == "net":
      fn = tf.function(self._net)
      return lambda: _materialise(fn(images))
    if kind == "full":
      shape = tf.constant([[size, size]] * batch, tf.float32)
      fn = tf.function(lambda x: self.model(x, image_shape=shape, training=False))
      return lambda: _materialise(fn(images))
    if kind == "post":
      return self._post_step(batch, size)
    if kind == "train":
      return self._train_step(images, batch, size)
    raise ValueError(f"unknown kind '{kind}'")

  def _post_step(self, batch: int, size: int) -> Callable[[], Any]:
    """Model Garden's detection generator on `synthetic_head_outputs`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from official.vision.ops import anchor  # pylint: disable=import-outside-toplevel

    a = self.model.head.get_config()["num_anchors_per_location"]
    levels = synthetic_head_outputs(batch, size, self.num_classes, a)
    scores, boxes, anchors = {}, {}, {}
    grid = anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 4.0, (size, size)).multilevel_boxes
    for level, (logits, deltas) in zip(range(3, 8), levels):
      scores[str(level)] = tf.constant(logits.reshape(logits.shape[:3] + (-1,)))
      boxes[str(level)] = tf.constant(deltas.reshape(deltas.shape[:3] + (-1,)))
      anchors[str(level)] = tf.tile(grid[str(level)][None], [batch, 1, 1, 1])
    shape = tf.constant([[size, size]] * batch, tf.float32)
    generator = self.model.detection_generator
    fn = tf.function(lambda: generator(boxes, scores, anchors, shape))
    return lambda: _materialise(fn())

  def _net(self, images):
    """Backbone + decoder + head, no post-processing."""
    features = self.model.decoder(self.model.backbone(images, training=False), training=False)
    return self.model.head(features, training=False)

  def _train_step(self, images, batch: int, size: int) -> Callable[[], Any]:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    labels = random_targets(self.model, batch, size, self.num_classes)
    optimizer = tf_keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    step = tf.function(lambda x, y: self.task.train_step((x, y), self.model, optimizer))
    return lambda: _materialise(step(images, labels))


def _materialise(outputs) -> None:
  """Copies every output to host memory, so a timing ends when the work has."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, outputs)


def main(argv: Optional[list[str]] = None) -> None:
  del argv
  serve(ModelGardenRunner())


if __name__ == "__main__":
  main()
