"""Per-layer full-int8 quantization error of a trained model (TFLite's quantization debugger).

  PYTHONPATH=. python bench/int8_layer_error.py MODEL_DIR [NUM_CALIBRATION_IMAGES]

Quantizes the `serving_default` signature as `export_lib` does for full_int8 (what
detection_module.FLOAT_NAMES names kept float), runs the debugger on the same validation
images and prints the tensors with the largest RMSE in units of their quantization step (about
0.29 is plain rounding; much more means clipping or a range that does not fit), then the
head's quantized outputs. Then, end to end: the `raw` outputs of the dynamic_int8 and
full_int8 files against the float32 model on those images, per level (RMSE and max |error| of
the box deltas and class logits).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from nasfpn_tf import precision
from nasfpn_tf.serving import export_lib
from nasfpn_tf.serving.detection_module import tflite_functions


def layer_errors(model_dir: str, num_images: int) -> list[dict]:
  model, beside = export_lib.load_trained_model(model_dir)
  config = export_lib.resolve_config(model, None, beside)
  # As every export: a model trained in bfloat16 is converted from its float32 twin (the
  # converter has no builtin bfloat16 convolution).
  model = precision.float32_copy(model)
  pixels = export_lib.to_pixels(export_lib.representative_images(config, num_images))

  with tempfile.TemporaryDirectory() as tmp:
    saved_model = os.path.join(tmp, "uint8")
    export_lib._write_saved_model(tflite_functions(model, tf.uint8), saved_model)  # noqa: SLF001
    debugger = export_lib.int8_debugger(saved_model, pixels, ["serving_default"])
    debugger.run()
  text = io.StringIO()
  debugger.layer_statistics_dump(text)
  text.seek(0)
  rows = list(csv.DictReader(text))
  for row in rows:
    scale = float(row["scale"])
    row["rmse_steps"] = np.sqrt(float(row["mean_squared_error"])) / scale if scale else 0.0
  return sorted(rows, key=lambda r: -r["rmse_steps"])


def level_errors(model_dir: str, num_images: int,
                 variants: tuple = ("dynamic_int8", "full_int8")) -> dict:
  """variant -> level -> {"box_rmse", "box_max", "cls_rmse", "cls_max"} against float32."""
  model, beside = export_lib.load_trained_model(model_dir)
  config = export_lib.resolve_config(model, None, beside)
  model = precision.float32_copy(model)
  images = export_lib.representative_images(config, num_images)
  want = [model(image[None], training=False) for image in images]
  sizes = model.detection_generator.level_sizes
  bounds = np.cumsum([0] + list(sizes))
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for variant in variants:
      path = export_lib.write_tflite(model, os.path.join(tmp, f"{variant}.tflite"), variant,
                                     images)
      detector = export_lib.TFLiteDetector(path)
      got = [detector.raw(image) for image in images]
      out[variant] = {}
      for level, start, end in zip(model.levels, bounds[:-1], bounds[1:]):
        row = {}
        for key, short in (("box_outputs", "box"), ("cls_outputs", "cls")):
          err = np.concatenate([np.asarray(g[key])[:, start:end] - np.asarray(w[key])[:, start:end]
                                for g, w in zip(got, want)])
          row[f"{short}_rmse"] = float(np.sqrt(np.mean(err ** 2)))
          row[f"{short}_max"] = float(np.abs(err).max())
        out[variant][level] = row
  return out


def main() -> None:
  model_dir = sys.argv[1]
  num_images = int(sys.argv[2]) if len(sys.argv) > 2 else 50
  rows = layer_errors(model_dir, num_images)
  print(f"{len(rows)} quantized tensors, median RMSE "
        f"{np.median([r['rmse_steps'] for r in rows]):.2f} steps; worst:")
  fmt = "{:>7.2f} steps  max|err| {:.3f}  float std {:.3f}  scale {:.4f}  {}"
  for row in rows[:10]:
    print(fmt.format(row["rmse_steps"], float(row["max_abs_error"]), float(row["stddev"]),
                     float(row["scale"]), row["tensor_name"].split(";")[0]))
  print("head outputs:")
  for row in rows:
    name = row["tensor_name"].split(";")[0]
    if name.endswith("BiasAdd") and ("box_regressor" in name or "classifier" in name):
      print(fmt.format(row["rmse_steps"], float(row["max_abs_error"]), float(row["stddev"]),
                       float(row["scale"]), name))
  print("raw outputs against the float32 model (box deltas / class logits):")
  for variant, levels in level_errors(model_dir, num_images).items():
    for level, e in levels.items():
      print(f"  {variant:<12} {level}  box RMSE {e['box_rmse']:.4f} max {e['box_max']:.3f}  "
            f"cls RMSE {e['cls_rmse']:.4f} max {e['cls_max']:.3f}")


if __name__ == "__main__":
  main()
