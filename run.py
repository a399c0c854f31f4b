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
  python run.py --mode=search --config_file=configs/search_shapes_oneshot.yaml  # one-shot
  python run.py --mode=validate_proxy --config_file=configs/search_shapes_oneshot.yaml
  python run.py --mode=export --model_dir=DIR --export_format=saved_model --export_dir=OUT
  python run.py --mode=import_checkpoint --checkpoint=PREFIX --source=modelgarden \
      --config_file=... --output=FILE.weights.h5   # a Model Garden / tensorflow/tpu checkpoint

eval and export without --config_file use MODEL_DIR/config.yaml. A bad input (config key, spec,
annotation file, image, checkpoint, folder) ends the run with one line, `error: <culprit>:
<what is wrong>`, and exit code 2, before anything is written into MODEL_DIR; --verbose shows
the traceback. A second training run on a MODEL_DIR in use is refused (nasfpn_tf/run_lock.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from nasfpn_tf import allocator  # noqa: E402  (standard library only)

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(_HERE, "configs", "shapes_nasfpn.yaml")

MODES = ("train", "eval", "train_and_eval", "describe", "draw", "search", "export",
         "make_tfrecords", "import_checkpoint", "validate_proxy")

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
flags.DEFINE_string("ray_address", None, "Join this Ray cluster for --mode=search, and for "
                    "--mode=validate_proxy with search.validation.max_concurrent > 1 "
                    "(default: start a local one).")
flags.DEFINE_enum("export_format", "saved_model", ["saved_model", "tflite"], "For --mode=export.")
flags.DEFINE_string("export_dir", None, "For --mode=export (default MODEL_DIR/export).")
flags.DEFINE_string("output", None,
                    "Output path for --mode=draw / make_tfrecords / import_checkpoint.")
flags.DEFINE_string("checkpoint", None, "For --mode=import_checkpoint: TensorFlow checkpoint "
                    "prefix (Model Garden or tensorflow/tpu).")
flags.DEFINE_enum("source", None, ["modelgarden", "tpu"], "For --mode=import_checkpoint: "
                  "the checkpoint's layout (default: detected).")
flags.DEFINE_bool("export_after_training", True,
                  "After train_and_eval, also export a SavedModel to MODEL_DIR/export.")
flags.DEFINE_bool("verbose", False, "On an error, show the full traceback instead of the "
                  "one-line message.")

# Modes that train into MODEL_DIR and therefore hold its lock (nasfpn_tf/run_lock.py). Not
# eval: it only reads the checkpoint and replaces eval_results.json, so it may run beside a
# training run.
# Modes that only run a trained model: oneDNN on the system allocator (nasfpn_tf/allocator.py).
INFERENCE_MODES = ("eval", "export", "draw", "describe")
LOCKED_MODES = ("train", "train_and_eval", "search", "validate_proxy")
# Errors that are about the user's input (a key, a file, a record, a folder): reported in one
# line, exit code 2, no traceback unless --verbose. Listed by module so that a mode never
# imports TensorFlow only to name an error it cannot raise.
USER_ERRORS = {
    "nasfpn_tf.configs.experiment": "ConfigError",
    "nasfpn_tf.architecture_spec": "SpecError",
    "nasfpn_tf.data.coco_reader": "DataError",
    "nasfpn_tf.run_lock": "LockError",
    "nasfpn_tf.serving.export_lib": "ExportError",
    "nasfpn_tf.trainer": "TrainingDivergedError",
    "nasfpn_tf.checkpoint_import": "CheckpointImportError",
}


def _config_file() -> str:
  """--config_file, or for eval/export without it, the config the model was trained with."""
  from nasfpn_tf.configs.experiment import ConfigError
  if FLAGS.mode not in ("eval", "export") or FLAGS["config_file"].present:
    return FLAGS.config_file
  # The shapes default would describe another model and other data (label map, eval split).
  saved = os.path.join(FLAGS.model_dir, "config.yaml")
  if os.path.exists(saved):
    return saved
  if FLAGS.mode == "eval":
    raise ConfigError("model_dir", f"{saved} does not exist: train into this folder first, "
                      "or pass --config_file")
  return ""


def _load_config():
  from nasfpn_tf.configs.loading import load_config
  config_file = _config_file()
  if FLAGS.mode == "export" and not config_file:
    return None  # export_lib then uses what it finds beside the model
  overrides = list(FLAGS.params_override)
  runtime = {}
  if FLAGS.strategy:
    runtime["strategy"] = FLAGS.strategy
  if FLAGS.tpu:
    runtime["tpu"] = FLAGS.tpu
  if runtime:
    overrides.append(json.dumps({"runtime": runtime}))
  config = load_config(config_file, overrides)
  if FLAGS.mode in ("search", "validate_proxy"):
    from nasfpn_tf.configs.search_config import check_matches_model
    check_matches_model(config.search, config.task.model)
  return config


def _config_of_model_dir(config):
  """MODEL_DIR/config.yaml (with --params_override) when --model_dir is given, holds one, and
  --config_file is not given: describe and draw then show the model that run trained."""
  saved = os.path.join(FLAGS.model_dir, "config.yaml")
  if (FLAGS["config_file"].present or not FLAGS["model_dir"].present
      or not os.path.isfile(saved)):
    return config
  from nasfpn_tf.configs.experiment import ConfigError
  from nasfpn_tf.configs.loading import load_config
  try:
    config = load_config(saved, list(FLAGS.params_override))
  except ConfigError as e:
    sys.exit(f"config error: {saved}: {e}")
  print(f"(the model of {saved})")
  return config


def _describe(config) -> None:
  """A table for people, then the same numbers as one JSON line for scripts (the last line)."""
  from nasfpn_tf.modeling.complexity import describe_model, format_description
  config = _config_of_model_dir(config)
  description = describe_model(config.task.model)
  print(format_description(description))
  print(json.dumps(description))


def _draw(config) -> None:
  """MODEL_DIR/architecture.png (or --output): the decoder's cells, titled with its spec."""
  from nasfpn_tf.architecture_spec import parse_spec
  from nasfpn_tf.modeling.complexity import decoder_summary
  from nasfpn_tf.visualize import draw_architecture
  m = _config_of_model_dir(config).task.model
  spec = parse_spec(m.decoder.spec if m.decoder.type == "nasfpn" else "fpn",
                    m.min_level, m.max_level)
  title = decoder_summary(m)
  if m.decoder.type == "fpn":
    title += " (the FPN decoder drawn as merging cells)"
  elif m.decoder.num_repeats > 1:
    title += " (one repeat drawn)"
  path = FLAGS.output or os.path.join(FLAGS.model_dir, "architecture.png")
  draw_architecture(spec, path, title=title)  # creates the folder
  print(f"{title}: {path}")


def _export(config, model=None) -> None:
  """Exports MODEL_DIR's trained model, or `model` when the caller has it loaded."""
  from nasfpn_tf.serving import export_lib
  export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
  if model is None:
    path = export_lib.export_from_model_dir(FLAGS.model_dir, export_dir, FLAGS.export_format,
                                            config=config)
  else:
    path = export_lib.export_model(model, export_dir, FLAGS.export_format, config)
  print(path)


def _train(config) -> None:
  from nasfpn_tf.evaluation.coco_evaluator import format_table
  from nasfpn_tf.trainer import run_experiment
  result = run_experiment(config, FLAGS.model_dir, FLAGS.mode)
  metrics = result.metrics
  if metrics:
    print("\nCOCO box metrics on the validation split:")
    print(format_table(metrics))
    print(f"(written to {os.path.join(FLAGS.model_dir, 'eval_results.json')})")
  from nasfpn_tf.distribute import is_chief
  # Workers of a multi-worker job share MODEL_DIR: only the chief draws and exports.
  if FLAGS.mode != "train_and_eval" or not is_chief():
    return
  # The model just trained, as it is in memory (what model.keras holds): drawn and exported
  # with the config it was trained with.
  _draw_detections(result.model, config)
  if FLAGS.export_after_training:
    _export(config, result.model)


def _draw_detections(model, config) -> None:
  """MODEL_DIR/detections.png: the trained model on a few validation images."""
  from nasfpn_tf.serving.detection_samples import write_detection_samples
  if config.task.validation_data.source not in ("embedded", "coco"):
    return
  path = os.path.join(FLAGS.model_dir, "detections.png")
  print(write_detection_samples(model, config.task.validation_data, path))


def _search(config) -> None:
  from nasfpn_tf.search.cli import run_search_from_config
  run_search_from_config(config, FLAGS.model_dir, ray_address=FLAGS.ray_address)


def _validate_proxy(config) -> None:
  from nasfpn_tf.search.proxy_validation import validate_proxy
  validate_proxy(config, FLAGS.model_dir, ray_address=FLAGS.ray_address)


def _make_tfrecords(config) -> None:
  from nasfpn_tf.data import tfrecord_writer
  out = FLAGS.output or os.path.join(FLAGS.model_dir, "tfrecords")
  for name, data in (("train", config.task.train_data), ("val", config.task.validation_data)):
    print(tfrecord_writer.write_tfrecords(data, os.path.join(out, name)))


def _import_checkpoint(config) -> None:
  """Converts a TensorFlow checkpoint once into a `.weights.h5` of the configured model
  (`task.init_checkpoint_modules` selects the parts; the rest keeps its initial values)."""
  from nasfpn_tf import checkpoint_import
  from nasfpn_tf.configs.experiment import ConfigError
  from nasfpn_tf.modeling.factory import build_model
  if not FLAGS.checkpoint or not FLAGS.output or not FLAGS.output.endswith(".weights.h5"):
    raise ConfigError("--checkpoint/--output", "import_checkpoint needs --checkpoint=PREFIX "
                      "and --output=FILE.weights.h5")
  checkpoint_import.preflight(FLAGS.checkpoint, config.task.init_checkpoint_modules)
  model = build_model(config.task.model)
  report = checkpoint_import.load_checkpoint(model, FLAGS.checkpoint, FLAGS.source,
                                             config.task.init_checkpoint_modules)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  model.save_weights(FLAGS.output)
  print(report.summary())
  print(FLAGS.output)


def _run() -> None:
  config = _load_config()
  handlers = {"describe": _describe, "draw": _draw, "export": _export, "search": _search,
              "make_tfrecords": _make_tfrecords, "import_checkpoint": _import_checkpoint,
              "validate_proxy": _validate_proxy}
  lock = contextlib.nullcontext()
  if FLAGS.mode in LOCKED_MODES:
    from nasfpn_tf.distribute import is_chief
    from nasfpn_tf.run_lock import RunLock
    if is_chief():  # the workers of a cluster share the chief's MODEL_DIR
      lock = RunLock(FLAGS.model_dir)
  with lock:
    handlers.get(FLAGS.mode, _train)(config)


def error_line(error: BaseException) -> str:
  """`error: <what, naming the key/file/record>` on one line."""
  if isinstance(error, OSError) and error.filename and error.strerror:
    text = f"{error.filename}: {error.strerror}"
  else:
    text = str(error) or type(error).__name__
  return "error: " + " ".join(text.split())


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.mode in INFERENCE_MODES:
    allocator.use_system_allocator()  # before TensorFlow's first op (see allocator.py)
  try:
    _run()
  except (OSError, *[getattr(sys.modules[m], name) for m, name in USER_ERRORS.items()
                     if m in sys.modules]) as e:
    if FLAGS.verbose:
      raise
    print(error_line(e), file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
