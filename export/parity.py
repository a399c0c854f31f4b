"""Measures how far each exported format drifts from the trained Keras model.

  python export/parity.py --model_dir=runs/default [--num_images=50] [--repeats=30]

On `num_images` validation images (task.validation_data of the model's config):
* raw head outputs: SavedModel (`serve_raw`) vs Keras, each TFLite variant (`raw`
  signature) vs the SavedModel: max |difference| of class logits and box deltas;
* COCO AP of every format's detections against the ground truth, side by side (Keras with
  its own NMS and with the padded NMS the TFLite files use, SavedModel `serving_default` on
  the original uint8 images, every TFLite variant on the preprocessed images);
* file size and single-image CPU latency (median of `repeats` calls after warm-up).

Missing exports are created first (MODEL_DIR/export unless --export_dir); a TFLite variant
that cannot be produced gets a row with the reason. A quantized variant whose AP falls more
than QUANTIZED_AP_BOUND below the float32 file's gets a WARNING line (printed, and listed
under "warnings" in the JSON). Progress goes to stderr. Prints a table and writes parity.json
(default MODEL_DIR/parity.json).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nasfpn_tf import allocator  # noqa: E402

allocator.use_system_allocator()  # inference only: see nasfpn_tf/allocator.py

from nasfpn_tf.data import preprocess  # noqa: E402
from nasfpn_tf.data.input_pipeline import coco_paths, raw_dataset  # noqa: E402
from nasfpn_tf.evaluation import coco_evaluator  # noqa: E402
from nasfpn_tf.serving import export_lib  # noqa: E402
from nasfpn_tf.serving.detection_module import DETECTION_KEYS, padded_generator  # noqa: E402

FLAGS = flags.FLAGS
# AP (0..1) a quantized TFLite file may lose against the float32 file before the report warns
# (the bound nasfpn_tf issue 13 sets for int8 on the embedded set).
QUANTIZED_AP_BOUND = 0.01
QUANTIZED_VARIANTS = ("float16", "dynamic_int8", "full_int8")
flags.DEFINE_string("model_dir", None, "Training run (model.keras + config.yaml).")
flags.DEFINE_integer("num_images", 50, "Validation images to compare on.")
flags.DEFINE_string("export_dir", "", "Exports to use/create (default MODEL_DIR/export).")
flags.DEFINE_list("variants", list(export_lib.TFLITE_VARIANTS), "TFLite variants.")
flags.DEFINE_integer("repeats", 30, "Timed single-image calls per format (median reported).")
flags.DEFINE_integer("num_threads", None, "TFLite CPU threads (default: all cores).")
flags.DEFINE_string("output", "", "parity.json path (default MODEL_DIR/parity.json).")
flags.DEFINE_string("config_file", "", "Experiment YAML (default MODEL_DIR/config.yaml).")
flags.DEFINE_multi_string("params_override", [], "dotted.key=value overrides.")


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
  for _ in range(2):  # warm-up: tracing, delegate set-up, allocations
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000.0 * statistics.median(times)


def _size_mb(path: str) -> float:
  if os.path.isfile(path):
    return os.path.getsize(path) / 2**20
  total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
              for f in files)
  return total / 2**20


def _max_diff(a: dict, b: dict) -> dict[str, float]:
  return {k: float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
          for k in ("cls_outputs", "box_outputs")}


def _stack(outputs: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.concatenate([np.asarray(o[k]) for o in outputs]) for k in outputs[0]}


def load_examples(config, num_images: int) -> tuple[list[dict], Any]:
  """The first `num_images` validation examples (raw) and the COCO ground truth."""
  data = config.task.validation_data
  dataset, info = raw_dataset(data)
  examples = list(dataset.take(num_images).as_numpy_iterator())
  annotation_file, _ = coco_paths(data)
  if annotation_file:
    gt = coco_evaluator.load_coco_gt(annotation_file)
  else:
    gt = coco_evaluator.coco_gt_from_examples(examples, info.category_names)
  return examples, gt


class Evaluation:
  """Collects detections per format and scores them on the same images."""

  def __init__(self, examples: list[dict], gt, input_size: list[int]):
    self.gt = gt
    self.ids = [int(ex["image_id"]) for ex in examples]
    pairs = [preprocess.resize_and_crop_image(ex["image"], input_size) for ex in examples]
    self.images = np.stack([p[0].numpy() for p in pairs])
    self.infos = np.stack([p[1].numpy() for p in pairs])
    self.originals = [ex["image"] for ex in examples]

  def ap(self, detections: list[dict], infos: Optional[np.ndarray] = None) -> dict:
    infos = self.infos if infos is None else infos
    records = coco_evaluator.detections_to_coco(_stack(detections), np.array(self.ids), infos)
    return coco_evaluator.coco_metrics(self.gt, records, self.ids)

  def identity_infos(self) -> np.ndarray:
    """image_info for detections already in original pixels (the SavedModel's)."""
    out = []
    for image in self.originals:
      h, w = image.shape[:2]
      out.append([[h, w], [h, w], [1.0, 1.0], [0.0, 0.0]])
    return np.array(out, np.float32)


def _keras_rows(model, ev: Evaluation, repeats: int, model_dir: str) -> tuple[list, list]:
  detect = tf.function(model.detect)
  raw_fn = tf.function(lambda x: model(x, training=False))
  generator = padded_generator(model)
  raws, dets, padded = [], [], []
  for image in ev.images:
    raw = raw_fn(image[None])
    raws.append({k: raw[k].numpy() for k in ("cls_outputs", "box_outputs")})
    dets.append({k: v.numpy() for k, v in detect(image[None]).items()})
    out = generator(raw["cls_outputs"], raw["box_outputs"], model.anchors)
    padded.append({k: np.asarray(v) for k, v in out.items()})
  keras_file = os.path.join(model_dir, export_lib.MODEL_FILE)
  size = _size_mb(keras_file) if os.path.exists(keras_file) else None
  rows = [
      {"format": "keras", "reference": None, "metrics": ev.ap(dets), "size_mb": size,
       "latency_ms": _median_ms(lambda: detect(ev.images[:1]), repeats)},
      {"format": "keras (padded NMS)", "reference": None, "metrics": ev.ap(padded),
       "size_mb": None, "latency_ms": None},
  ]
  return rows, raws


def _saved_model_row(path: str, ev: Evaluation, keras_raws: list, repeats: int
                     ) -> tuple[dict, list]:
  loaded = tf.saved_model.load(path)
  serve, serve_raw = loaded.signatures["serving_default"], loaded.signatures["serve_raw"]
  raws, dets = [], []
  for image, original in zip(ev.images, ev.originals):
    raws.append({k: v.numpy() for k, v in serve_raw(images=tf.constant(image[None])).items()})
    out = serve(images=tf.constant(original[None]))
    dets.append({k: out[k].numpy() for k in DETECTION_KEYS})
  diffs = _max_diff(_stack(raws), _stack(keras_raws))
  first = tf.constant(ev.originals[0][None])
  row = {"format": "saved_model", "reference": "keras", "raw_max_abs_diff": diffs,
         "metrics": ev.ap(dets, ev.identity_infos()), "size_mb": _size_mb(path),
         "latency_ms": _median_ms(lambda: serve(images=first), repeats)}
  return row, raws


def _tflite_row(variant: str, path: str, ev: Evaluation, sm_raws: list, repeats: int,
                num_threads: Optional[int]) -> dict:
  detector = export_lib.TFLiteDetector(path, num_threads)
  raws = [detector.raw(image) for image in ev.images]
  dets = [detector.detect(image) for image in ev.images]
  return {"format": f"tflite {variant}", "reference": "saved_model",
          "raw_max_abs_diff": _max_diff(_stack(raws), _stack(sm_raws)),
          "metrics": ev.ap(dets), "size_mb": _size_mb(path),
          "input_dtype": str(detector.input_dtype),
          "latency_ms": _median_ms(lambda: detector.detect(ev.images[0]), repeats)}


def _progress(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def ap_warnings(rows: list[dict], bound: float = QUANTIZED_AP_BOUND) -> list[str]:
  """One line per quantized TFLite variant whose AP is more than `bound` below float32's."""
  aps = {r["format"]: r["metrics"]["AP"] for r in rows if "metrics" in r}
  reference = aps.get("tflite float32")
  if reference is None:
    return []
  out = []
  for variant in QUANTIZED_VARIANTS:
    ap = aps.get(f"tflite {variant}")
    if ap is not None and reference - ap > bound:
      out.append(f"WARNING: tflite {variant} loses {reference - ap:.4f} AP against tflite "
                 f"float32 ({ap:.4f} vs {reference:.4f}), more than the {bound} bound")
  return out


def ensure_exports(model, config, export_dir: str, variants: list[str]) -> dict[str, str]:
  """Creates the SavedModel and missing TFLite files; returns variant -> failure reason."""
  if not os.path.exists(os.path.join(export_dir, export_lib.SAVED_MODEL_DIR)):
    _progress(f"exporting the SavedModel to {export_dir}")
    export_lib.export_saved_model(model, export_dir, config)
  missing = [v for v in variants if not os.path.exists(export_lib.tflite_path(export_dir, v))]
  if not missing:
    return {}
  _progress(f"exporting TFLite {', '.join(missing)} to {export_dir}")
  try:
    export_lib.export_tflite(model, export_dir, missing, config)
  except export_lib.ExportError as e:
    return e.failures
  return {}


def _fmt(value: Optional[float], spec: str) -> str:
  return "-" if value is None else format(value, spec)


def format_table(rows: list[dict]) -> str:
  """Markdown table: AP, AP50, raw max |diff| (cls / box), reference, size, latency."""
  lines = ["| format | AP | AP50 | max abs diff cls / box (vs) | size MB | latency ms |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['format']} | failed: {r['error']} | | | | |")
      continue
    diff = r.get("raw_max_abs_diff")
    diff_text = (f"{diff['cls_outputs']:.2e} / {diff['box_outputs']:.2e} ({r['reference']})"
                 if diff else "-")
    lines.append(f"| {r['format']} | {r['metrics']['AP']:.4f} | {r['metrics']['AP50']:.4f} | "
                 f"{diff_text} | {_fmt(r['size_mb'], '.2f')} | "
                 f"{_fmt(r['latency_ms'], '.1f')} |")
  return "\n".join(lines)


def run_parity(model_dir: str, num_images: int, export_dir: str = "",
               variants: Optional[list[str]] = None, repeats: int = 30,
               num_threads: Optional[int] = None, config=None) -> dict:
  """Exports if needed, measures every format, returns the parity report (see module doc)."""
  variants = list(variants or export_lib.TFLITE_VARIANTS)
  model, beside = export_lib.load_trained_model(model_dir)
  config = export_lib.resolve_config(model, config, beside)
  if config is None:
    raise ValueError(f"no config.yaml in {model_dir}: pass --config_file")
  export_dir = export_dir or os.path.join(model_dir, "export")
  failures = ensure_exports(model, config, export_dir, variants)
  examples, gt = load_examples(config, num_images)
  ev = Evaluation(examples, gt, list(model.input_size))
  _progress(f"keras on {len(examples)} images")
  rows, keras_raws = _keras_rows(model, ev, repeats, model_dir)
  _progress("saved_model")
  sm_row, sm_raws = _saved_model_row(os.path.join(export_dir, export_lib.SAVED_MODEL_DIR), ev,
                                     keras_raws, repeats)
  rows.append(sm_row)
  threads = num_threads or os.cpu_count()
  for variant in variants:
    if variant in failures:
      rows.append({"format": f"tflite {variant}", "error": failures[variant]})
      continue
    _progress(f"tflite {variant}")
    rows.append(_tflite_row(variant, export_lib.tflite_path(export_dir, variant), ev, sm_raws,
                            repeats, threads))
  return {"model_dir": model_dir, "export_dir": export_dir, "num_images": len(examples),
          "repeats": repeats, "tflite_threads": threads, "input_size": list(model.input_size),
          "machine": f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}",
          "load_average": list(os.getloadavg()), "rows": rows, "warnings": ap_warnings(rows)}


def main(argv) -> None:
  del argv
  if not FLAGS.model_dir:
    sys.exit("--model_dir is required")
  config = export_lib.load_export_config(FLAGS.model_dir, FLAGS.config_file,
                                         FLAGS.params_override)
  report = run_parity(FLAGS.model_dir, FLAGS.num_images, FLAGS.export_dir, FLAGS.variants,
                      FLAGS.repeats, FLAGS.num_threads, config)
  output = FLAGS.output or os.path.join(FLAGS.model_dir, "parity.json")
  coco_evaluator.write_json_atomic(report, output)
  print(f"\n{report['num_images']} validation images, input {report['input_size']}, "
        f"{report['machine']}, TFLite threads {report['tflite_threads']}, load average "
        f"{' '.join(f'{x:.2f}' for x in report['load_average'])} at the end")
  print(format_table(report["rows"]))
  for line in report["warnings"]:
    print(line)
  print(f"(written to {output})")
  if any("error" in r for r in report["rows"]):
    sys.exit(1)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
