"""Per-layer full-int8 quantization error of a trained model (TFLite's quantization debugger).

  PYTHONPATH=. python bench/int8_layer_error.py MODEL_DIR [NUM_CALIBRATION_IMAGES]

Quantizes the `serving_default` signature as `export_lib` does for full_int8 (post-processing
kept float), runs the debugger on the same validation images and prints the tensors with the
largest RMSE in units of their quantization step (about 0.29 is plain rounding; much more
means clipping or a range that does not fit), then the head's outputs.
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

  def samples():  # one signature: plain input lists, as the debugger wants them
    for image in pixels:
      yield [image[None]]

  with tempfile.TemporaryDirectory() as tmp:
    saved_model = os.path.join(tmp, "uint8")
    export_lib._write_saved_model(tflite_functions(model, tf.uint8), saved_model)  # noqa: SLF001
    converter = export_lib._converter(saved_model, ["serving_default"])  # noqa: SLF001
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=export_lib._postprocessing_tensors(saved_model))  # noqa: SLF001
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=samples, debug_options=options)
    debugger.run()
  text = io.StringIO()
  debugger.layer_statistics_dump(text)
  text.seek(0)
  rows = list(csv.DictReader(text))
  for row in rows:
    scale = float(row["scale"])
    row["rmse_steps"] = np.sqrt(float(row["mean_squared_error"])) / scale if scale else 0.0
  return sorted(rows, key=lambda r: -r["rmse_steps"])


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


if __name__ == "__main__":
  main()
