"""nasfpn_tf entry point.

With no flags it runs the embedded default end to end: generates the shapes
dataset if missing, trains a small NAS-FPN RetinaNet on the CPU, evaluates COCO
AP on the held-out split, prints the table and exports a SavedModel.

  python run.py                                          # the embedded default
  python run.py --config_file=configs/retinanet_r50_nasfpn_640_coco.yaml \
      --params_override=task.train_data.annotation_file=...,trainer.train_steps=1000
  python run.py --mode=describe --config_file=...        # parameter counts and MACs
  python run.py --mode=draw --config_file=...            # PNG of the decoder architecture
  python run.py --mode=search --config_file=configs/search_shapes_proxy.yaml
  python run.py --mode=export --model_dir=DIR --export_format=saved_model --export_dir=OUT
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(_HERE, "configs", "shapes_nasfpn.yaml")

MODES = ("train", "eval", "train_and_eval", "describe", "draw", "search", "export",
         "make_tfrecords")

FLAGS = flags.FLAGS
flags.DEFINE_string("config_file", DEFAULT_CONFIG, "YAML experiment file.")
flags.DEFINE_multi_string("params_override", [],
                          "dotted.key=value pairs (comma separated) or a YAML file of overrides.")
flags.DEFINE_enum("mode", "train_and_eval", MODES, "What to run.")
flags.DEFINE_string("model_dir", os.path.join("runs", "default"),
                    "Where checkpoints, logs, eval_results.json and exports go.")
flags.DEFINE_string("strategy", None, "Overrides runtime.strategy (default, mirrored, "
                    "multi_worker, tpu).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (sets runtime.tpu).")
flags.DEFINE_string("ray_address", None, "Join this Ray cluster for --mode=search "
                    "(default: start a local one).")
flags.DEFINE_enum("export_format", "saved_model", ["saved_model", "tflite"], "For --mode=export.")
flags.DEFINE_string("export_dir", None, "For --mode=export (default MODEL_DIR/export).")
flags.DEFINE_string("output", None, "Output path for --mode=draw / make_tfrecords.")
flags.DEFINE_bool("export_after_training", True,
                  "After train_and_eval, also export a SavedModel to MODEL_DIR/export.")


def _load_config():
  from nasfpn_tf.configs.loading import load_config
  overrides = list(FLAGS.params_override)
  runtime = {}
  if FLAGS.strategy:
    runtime["strategy"] = FLAGS.strategy
  if FLAGS.tpu:
    runtime["tpu"] = FLAGS.tpu
  if runtime:
    overrides.append(json.dumps({"runtime": runtime}))
  return load_config(FLAGS.config_file, overrides)


def _describe(config) -> None:
  from nasfpn_tf.modeling.complexity import describe_model
  print(json.dumps(describe_model(config.task.model)))


def _draw(config) -> None:
  from nasfpn_tf.architecture_spec import parse_spec
  from nasfpn_tf.visualize import draw_architecture
  m = config.task.model
  spec = parse_spec(m.decoder.spec if m.decoder.type == "nasfpn" else "fpn",
                    m.min_level, m.max_level)
  path = FLAGS.output or os.path.join(FLAGS.model_dir, "architecture.png")
  draw_architecture(spec, path)  # creates the folder
  print(path)


def _export(config, model=None) -> None:
  """Exports MODEL_DIR's trained model, or `model` when the caller has it loaded."""
  from nasfpn_tf.serving import export_lib
  export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
  try:
    if model is None:
      path = export_lib.export_from_model_dir(FLAGS.model_dir, export_dir, FLAGS.export_format,
                                              config=config)
    else:
      path = export_lib.export_model(model, export_dir, FLAGS.export_format, config)
  except export_lib.ExportError as e:
    sys.exit(f"export error: {e}")
  print(path)


def _train(config) -> None:
  from nasfpn_tf.evaluation.coco_evaluator import format_table
  from nasfpn_tf.trainer import train_and_evaluate
  metrics = train_and_evaluate(config, FLAGS.model_dir, FLAGS.mode)
  if metrics:
    print("\nCOCO box metrics on the validation split:")
    print(format_table(metrics))
    print(f"(written to {os.path.join(FLAGS.model_dir, 'eval_results.json')})")
  from nasfpn_tf.distribute import is_chief
  # Workers of a multi-worker job share MODEL_DIR: only the chief draws and exports.
  if FLAGS.mode != "train_and_eval" or not is_chief():
    return
  from nasfpn_tf.serving.export_lib import load_trained_model, resolve_config
  # Loaded once from what training wrote, for both the drawing and the export.
  model, beside = load_trained_model(FLAGS.model_dir)
  config = resolve_config(model, config, beside)
  _draw_detections(model, config)
  if FLAGS.export_after_training:
    _export(config, model)


def _draw_detections(model, config) -> None:
  """MODEL_DIR/detections.png: the trained model on a few validation images."""
  from nasfpn_tf.evaluation.detection_samples import write_detection_samples
  if config.task.validation_data.source not in ("embedded", "coco"):
    return
  path = os.path.join(FLAGS.model_dir, "detections.png")
  print(write_detection_samples(model, config.task.validation_data, path))


def _search(config) -> None:
  from nasfpn_tf.search.cli import run_search_from_config
  run_search_from_config(config, FLAGS.model_dir, ray_address=FLAGS.ray_address)


def _make_tfrecords(config) -> None:
  from nasfpn_tf.data import tfrecord
  out = FLAGS.output or os.path.join(FLAGS.model_dir, "tfrecords")
  for name, data in (("train", config.task.train_data), ("val", config.task.validation_data)):
    print(tfrecord.write_tfrecords(data, os.path.join(out, name)))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from nasfpn_tf.configs.experiment import ConfigError
  try:
    config = _load_config()
  except ConfigError as e:
    sys.exit(f"config error: {e}")
  handlers = {"describe": _describe, "draw": _draw, "export": _export, "search": _search,
              "make_tfrecords": _make_tfrecords}
  handlers.get(FLAGS.mode, _train)(config)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
