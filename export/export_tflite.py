"""Exports a trained model as TFLite files (post-processing included, builtin ops only).

  python export/export_tflite.py --model_dir=runs/default [--export_dir=runs/default/export] \
      [--variants=float32,float16,dynamic_int8,full_int8] [--num_calibration_images=100]

One EXPORT_DIR/model_<variant>.tflite per variant, each with signatures `serving_default`
(detections in model-input pixels) and `raw` (head outputs), input [1, H, W, 3] at the model's
input size, preprocessed with nasfpn_tf.data.preprocess.resize_and_crop_image (float32; uint8
pixels for full_int8). full_int8 is calibrated on validation images from the configured input
pipeline. A variant that cannot be produced is reported in one line and the tool exits 1;
the other variants are still written, and no partial file is ever left.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from nasfpn_tf import allocator  # noqa: E402

allocator.use_system_allocator()  # inference only: see nasfpn_tf/allocator.py

from nasfpn_tf.configs.experiment import ConfigError  # noqa: E402
from nasfpn_tf.serving import export_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Training run (model.keras, or checkpoint + config.yaml) "
                    "or a .keras file.")
flags.DEFINE_string("export_dir", "", "Output folder (default MODEL_DIR/export).")
flags.DEFINE_list("variants", list(export_lib.TFLITE_VARIANTS), "Variants to write.")
flags.DEFINE_integer("num_calibration_images", 100, "Validation images to calibrate full_int8.")
flags.DEFINE_string("config_file", "", "Experiment YAML (default MODEL_DIR/config.yaml).")
flags.DEFINE_multi_string("params_override", [], "dotted.key=value overrides.")


def main(argv) -> None:
  del argv
  if not FLAGS.model_dir:
    sys.exit("--model_dir is required")
  export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
  try:
    config = export_lib.load_export_config(FLAGS.model_dir, FLAGS.config_file,
                                           FLAGS.params_override)
    model, beside = export_lib.load_trained_model(FLAGS.model_dir)
    config = export_lib.resolve_config(model, config, beside)
    written = export_lib.export_tflite(model, export_dir, FLAGS.variants, config,
                                       FLAGS.num_calibration_images)
  except ConfigError as e:
    sys.exit(f"config error: {e}")
  except export_lib.ExportError as e:
    for path in e.written.values():
      print(path)
    for variant, reason in e.failures.items():
      print(f"{variant}: cannot export: {reason}", file=sys.stderr)
    sys.exit(1)
  for path in written.values():
    print(path)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
