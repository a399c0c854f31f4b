"""Exports a trained model as a SavedModel for serving.

  python export/export_saved_model.py --model_dir=runs/default [--export_dir=runs/default/export]
  saved_model_cli show --dir runs/default/export/saved_model --all

Writes EXPORT_DIR/saved_model (signatures serving_default: uint8 images [B, H, W, 3] of any
size; serve_encoded: JPEG/PNG bytes [B]; serve_raw: head outputs), label_map.json and
config.yaml beside it. The config comes from MODEL_DIR/config.yaml unless --config_file.
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
flags.DEFINE_integer("batch_size", None, "Static batch size of the signatures (default: any).")
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
    path = export_lib.export_from_model_dir(FLAGS.model_dir, export_dir, "saved_model",
                                            config=config, batch_size=FLAGS.batch_size)
  except (export_lib.ExportError, ConfigError) as e:
    sys.exit(f"saved_model: {e}")
  print(path)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
