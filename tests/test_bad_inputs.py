"""Every malformed input is answered in one line naming the culprit, before MODEL_DIR changes.

One table (`CLI_CASES`) of bad inputs given to `run.py`: config keys and values, decoder specs,
annotation files, image files, init checkpoints, model and export folders, search configs. Each
runs `run.main` in this process (one TensorFlow import for all) and must exit with code 2,
print exactly one `error: ...` line that names the culprit, print no traceback, and leave
MODEL_DIR as it was (no folder created, no file added or changed). Three cases also run as real
subprocesses. Inputs that are not command lines have their own tables below: tensors fed to the
exported SavedModel's signatures (an error whose first line names the input, and the server
keeps serving), images fed to a TFLite detector (ValueError naming the file and the shape),
and broken image files under on_bad_annotation=skip (the documented skip: reported by file
and image id, dropped, and the rest of the split decodes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
import yaml

from tests.run_helpers import ROOT, run_in_process

TINY_MODEL = ("task.model.input_size=[128,128],task.model.backbone.depth=10,"
              "task.model.backbone.width_multiplier=0.25,task.model.decoder.type=fpn,"
              "task.model.decoder.filters=32,task.model.head.filters=32,"
              "task.model.head.num_convs=1,task.model.detection.pre_nms_top_k=500,"
              "task.model.num_classes=6")
SCHEDULE = ("trainer.train_steps=2,trainer.validation_interval=2,trainer.checkpoint_interval=2,"
            "trainer.backup_interval=2")
# The published cell's compact string, for the specs below that change one cell of it.
NASFPN = "P4:gp:1,3 P4:sum:1,5 P3:sum:0,6:out P4:sum:6,7:out P5:gp:7,8:out P7:gp:6,9:out " \
         "P6:gp:9,10:out"


# ------------------------------------------------------------------------------ fixtures

@dataclasses.dataclass
class Env:
  """Paths the cases refer to; `model_dir` is fresh (and absent) for every case."""
  tmp: str
  train_json: str
  train_dir: str
  val_json: str
  val_dir: str
  bad: str          # folder of broken files, made per case by the case's `setup`
  model_dir: str
  trained_dir: str  # a MODEL_DIR with config.yaml and model.keras of the tiny model

  def data(self, train_json: str = "", train_dir: str = "", on_bad: str = "skip") -> str:
    return (f"task.train_data.source=coco,"
            f"task.train_data.annotation_file={train_json or self.train_json},"
            f"task.train_data.image_dir={train_dir or self.train_dir},"
            f"task.train_data.on_bad_annotation={on_bad},task.train_data.global_batch_size=2,"
            f"task.validation_data.source=coco,task.validation_data.annotation_file={self.val_json},"
            f"task.validation_data.image_dir={self.val_dir},"
            "task.validation_data.global_batch_size=2")

  def train(self, *overrides: str, mode: str = "train") -> list[str]:
    """A tiny training command on good data, then `overrides` (later ones win)."""
    return [f"--mode={mode}", f"--model_dir={self.model_dir}", "--config_file=",
            f"--params_override={TINY_MODEL},{self.data()},{SCHEDULE}",
            *[f"--params_override={o}" for o in overrides]]

  def file(self, name: str, content) -> str:
    """Writes a file under `bad` (dict/list -> YAML/JSON, bytes as they are); returns its path."""
    path = os.path.join(self.bad, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(content, bytes):
      data = content
    elif name.endswith(".json"):
      data = json.dumps(content).encode()
    elif isinstance(content, str):
      data = content.encode()
    else:
      data = yaml.safe_dump(content).encode()
    with open(path, "wb") as f:
      f.write(data)
    return path

  def spec(self, spec) -> str:
    """An override file that makes the model NAS-FPN with `spec`."""
    return self.file("spec_override.yaml",
                     {"task": {"model": {"decoder": {"type": "nasfpn", "spec": spec}}}})

  def coco(self, mutate: Callable[[dict], None]) -> str:
    """A copy of the good train json changed by `mutate`."""
    with open(self.train_json) as f:
      coco = json.load(f)
    mutate(coco)
    return self.file("train.json", coco)

  def image_copy(self, name: str, data: bytes) -> tuple[str, str]:
    """The good train images with image `name` replaced by `data`; returns (json, folder)."""
    folder = os.path.join(self.bad, "images")
    shutil.copytree(self.train_dir, folder)
    with open(os.path.join(folder, name), "wb") as f:
      f.write(data)
    return self.train_json, folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  from nasfpn_tf.configs.loading import load_config, save_yaml
  from nasfpn_tf.data.shapes_dataset import generate_shapes_dataset
  from nasfpn_tf.modeling.factory import build_model
  root = str(tmp_path_factory.mktemp("bad_inputs"))
  train = generate_shapes_dataset(os.path.join(root, "data"), "train", 4, image_size=128)
  val = generate_shapes_dataset(os.path.join(root, "data"), "val", 2, image_size=128)
  trained = os.path.join(root, "trained")
  os.makedirs(trained)
  env = Env(root, *train, *val, "", "", trained)
  config = load_config("", [TINY_MODEL, env.data(), SCHEDULE])
  save_yaml(config, os.path.join(trained, "config.yaml"))
  # Untrained weights are enough: these cases fail before any number is computed.
  build_model(config.task.model).save(os.path.join(trained, "model.keras"))
  return env


@pytest.fixture
def env(data_root, tmp_path):
  return dataclasses.replace(data_root, bad=str(tmp_path / "bad"),
                             model_dir=str(tmp_path / "model"))


def snapshot(path: str) -> dict[str, tuple[int, int]]:
  """relative path -> (size, mtime_ns) of everything under `path` ({} when absent)."""
  out = {}
  for folder, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(folder, name)
      st = os.stat(full)
      out[os.path.relpath(full, path)] = (st.st_size if name in files else -1, st.st_mtime_ns)
  return out


# ------------------------------------------------------------------------------ the table

@dataclasses.dataclass
class Case:
  """A bad input: `argv(env)` is the command line, `culprits` must all be in the error line."""
  name: str
  argv: Callable[[Env], list[str]]
  culprits: Callable[[Env], list[str]]


def _c(name, argv, *culprits):
  return Case(name, argv, lambda e: [c(e) if callable(c) else c for c in culprits])


def _truncated_jpeg(env: Env) -> bytes:
  with open(os.path.join(env.train_dir, "000002.jpg"), "rb") as f:
    data = f.read()
  return data[:len(data) // 2]


def _truncated_png(env: Env) -> bytes:
  import io
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(
      buf, "PNG")
  return buf.getvalue()[:len(buf.getvalue()) // 2]


def _image_case(name: str, make: Callable[[Env], bytes], on_bad: str = "error") -> Case:
  def argv(env):
    json_path, folder = env.image_copy("000002.jpg", make(env))
    return env.train(env.data(json_path, folder, on_bad))
  return _c(name, argv, lambda e: os.path.join(e.bad, "images", "000002.jpg"), "image id=2")


def _locked(env: Env) -> list[str]:
  os.makedirs(env.model_dir)
  with open(os.path.join(env.model_dir, ".run.lock"), "w") as f:
    f.write(f"{os.getpid()} {socket.gethostname()}\n")  # this process: alive
  return env.train()


def _eval_without_checkpoint(env: Env) -> list[str]:
  from nasfpn_tf.configs.loading import load_config, save_yaml
  os.makedirs(env.model_dir)
  save_yaml(load_config("", [TINY_MODEL, env.data(), SCHEDULE]),
            os.path.join(env.model_dir, "config.yaml"))
  return ["--mode=eval", f"--model_dir={env.model_dir}"]


CLI_CASES = [
    # --- config keys and values (issue items 1, 4, 5)
    _c("backup_interval_0", lambda e: e.train("trainer.backup_interval=0"),
       "trainer.backup_interval", "got 0"),
    _c("validation_interval_0", lambda e: e.train("trainer.validation_interval=0"),
       "trainer.validation_interval"),
    _c("checkpoint_interval_negative", lambda e: e.train("trainer.checkpoint_interval=-5"),
       "trainer.checkpoint_interval", "got -5"),
    _c("validation_steps_0", lambda e: e.train("trainer.validation_steps=0"),
       "trainer.validation_steps"),
    _c("warmup_steps_negative", lambda e: e.train("trainer.learning_rate.warmup_steps=-1"),
       "trainer.learning_rate.warmup_steps"),
    _c("unknown_key", lambda e: e.train("task.model.foo=1"), "task.model.foo", "unknown key"),
    _c("num_classes_not_int", lambda e: e.train("task.model.num_classes=abc"),
       "task.model.num_classes"),
    _c("input_size_not_multiple", lambda e: e.train("task.model.input_size=[100,128]"),
       "task.model.input_size[0]"),
    _c("unknown_strategy", lambda e: e.train("runtime.strategy=gpu"), "runtime.strategy"),
    _c("unknown_source", lambda e: e.train("task.train_data.source=bar"),
       "task.train_data.source"),
    _c("annotation_file_with_embedded_source",
       lambda e: e.train(f"task.train_data.source=embedded,task.train_data.image_dir='',"
                         f"task.train_data.annotation_file={e.train_json}"),
       "task.train_data.annotation_file", "ignored", lambda e: e.train_json),
    _c("image_dir_with_embedded_source",
       lambda e: e.train("task.validation_data.source=embedded,"
                         "task.validation_data.annotation_file=''"),
       "task.validation_data.image_dir", "ignored"),
    _c("coco_source_without_annotation_file",
       lambda e: e.train("task.train_data.annotation_file=''"), "task.train_data.annotation_file"),
    _c("tfrecord_source_without_pattern",
       lambda e: e.train("task.train_data.source=tfrecord,task.train_data.annotation_file='',"
                         "task.train_data.image_dir=''"), "task.train_data.tfrecord_pattern"),
    _c("steps_per_execution_not_dividing", lambda e: e.train("runtime.steps_per_execution=3"),
       "trainer.train_steps", "steps_per_execution"),
    _c("override_not_key_value", lambda e: e.train("foo"), "params_override", "foo"),
    _c("config_file_missing", lambda e: ["--config_file=/nonexistent/exp.yaml",
                                         f"--model_dir={e.model_dir}"],
       "config_file", "/nonexistent/exp.yaml"),
    _c("config_file_not_yaml", lambda e: [f"--config_file={e.file('exp.yaml', 'a: [1, 2')}",
                                          f"--model_dir={e.model_dir}"],
       "config_file", "not valid YAML"),
    _c("config_file_a_list", lambda e: [f"--config_file={e.file('exp.yaml', [1, 2])}",
                                        f"--model_dir={e.model_dir}"],
       "config_file", "mapping"),
    # --- decoder spec (item 3): refused at config load, before model build
    _c("spec_index_out_of_range", lambda e: e.train(e.spec(NASFPN.replace("9,10", "9,99"))),
       "task.model.decoder.spec", "cell 6", "index 99"),
    _c("spec_unknown_op", lambda e: e.train(e.spec(NASFPN.replace("P4:sum:1,5", "P4:mul:1,5"))),
       "task.model.decoder.spec", "cell 1", "'mul'"),
    _c("spec_bad_level", lambda e: e.train(e.spec(NASFPN.replace("P4:gp:1,3", "P9:gp:1,3"))),
       "task.model.decoder.spec", "cell 0", "level 9"),
    _c("spec_empty_list", lambda e: e.train(e.spec([])), "task.model.decoder.spec", "no cells"),
    _c("spec_garbage", lambda e: e.train(e.spec("%%garbage%%")), "task.model.decoder.spec",
       "%%garbage%%"),
    _c("spec_no_output_for_p7", lambda e: e.train(e.spec(NASFPN.replace("P7:gp:6,9:out",
                                                                        "P7:gp:6,9"))),
       "task.model.decoder.spec", "P7"),
    _c("spec_file_missing_field",
       lambda e: e.train(e.spec(e.file("spec.yaml", {"cells": [{"level": 3, "op": "sum"}]}))),
       "task.model.decoder.spec", "spec.yaml", "cell 0", "'inputs'"),
    _c("spec_file_missing", lambda e: e.train(e.spec("/nonexistent/spec.yaml")),
       "task.model.decoder.spec", "/nonexistent/spec.yaml"),
    _c("spec_levels_not_the_model",
       lambda e: e.train(e.spec({"min_level": 4, "max_level": 7,
                                 "cells": [[4, "sum", [0, 1], True], [5, "sum", [1, 2], True],
                                           [6, "sum", [2, 3], True], [7, "sum", [3, 0], True]]})),
       "task.model.decoder.spec", "P4..P7", "P3..P7"),
    # --- annotation files (items 4, 5)
    _c("annotation_file_missing",
       lambda e: e.train(e.data("/nonexistent/train.json")), "/nonexistent/train.json"),
    _c("annotation_json_malformed",
       lambda e: e.train(e.data(e.file("train.json", b'{"images": [}'))), "train.json",
       "malformed JSON"),
    _c("annotation_json_a_list", lambda e: e.train(e.data(e.file("train.json", [1]))),
       "train.json", "JSON object"),
    _c("annotation_json_without_images",
       lambda e: e.train(e.data(e.coco(lambda c: c.pop("images")))), "train.json", "'images'"),
    _c("annotation_json_empty_images",
       lambda e: e.train(e.data(e.coco(lambda c: c.update(images=[])))), "train.json",
       "'images' is empty"),
    _c("annotation_json_empty_categories",
       lambda e: e.train(e.data(e.coco(lambda c: c.update(categories=[])))), "train.json",
       "'categories' is empty"),
    _c("annotation_unknown_category_on_bad_error",
       lambda e: e.train(e.data(e.coco(lambda c: c["annotations"][0].update(category_id=77)),
                                on_bad="error")),
       "train.json", "annotation id=1", "category_id 77"),
    _c("annotation_bbox_outside_on_bad_error",
       lambda e: e.train(e.data(e.coco(lambda c: c["annotations"][1].update(
           bbox=[100, 100, 500, 20])), on_bad="error")),
       "train.json", "annotation id=2", "beyond"),
    _c("image_dir_missing", lambda e: e.train(e.data(train_dir="/nonexistent/images")),
       "image_dir /nonexistent/images"),
    _c("no_image_file_found", lambda e: e.train(e.data(train_dir=e.file("empty/.keep", "") and
                                                        os.path.join(e.bad, "empty"))),
       lambda e: e.train_json, "no usable images", "image_missing"),
    _c("num_classes_too_small", lambda e: e.train("task.model.num_classes=3"),
       "task.model.num_classes", "largest category id is 5"),
    # --- image files (item 2): the body is decoded at load, the file is named
    _image_case("jpeg_truncated", _truncated_jpeg),
    _image_case("png_truncated_as_jpg", _truncated_png),
    _image_case("jpeg_garbage", lambda e: b"\xff\xd8\xff" + os.urandom(2000)),
    _image_case("image_empty_file", lambda e: b""),
    # --- checkpoints, folders, modes (items 4, 10, 12, 13)
    _c("init_checkpoint_missing", lambda e: e.train("task.init_checkpoint=/nonexistent/w.weights.h5"),
       "task.init_checkpoint", "/nonexistent/w.weights.h5"),
    _c("model_dir_not_writable",
       lambda e: ["--mode=train", f"--model_dir={e.file('a_file', 'x')}/model", "--config_file=",
                  f"--params_override={TINY_MODEL},{e.data()},{SCHEDULE}"],
       lambda e: os.path.join(e.bad, "a_file")),
    _c("model_dir_in_use", _locked, "in use", lambda e: str(os.getpid())),
    _c("eval_without_trained_config", lambda e: ["--mode=eval", f"--model_dir={e.model_dir}"],
       "model_dir", lambda e: os.path.join(e.model_dir, "config.yaml")),
    _c("eval_without_checkpoint", _eval_without_checkpoint, "checkpoint.weights.h5",
       "train first"),
    _c("export_without_model", lambda e: ["--mode=export", f"--model_dir={e.model_dir}"],
       "holds neither", lambda e: e.model_dir),
    _c("export_dir_not_writable",
       lambda e: ["--mode=export", f"--model_dir={e.trained_dir}",
                  f"--export_dir={e.file('a_file', 'x')}/export"],
       lambda e: os.path.join(e.bad, "a_file")),
    _c("export_bad_override",
       lambda e: ["--mode=export", f"--model_dir={e.trained_dir}",
                  "--params_override=task.model.decoder.filterz=3"],
       "task.model.decoder.filterz"),
    # --- search config (item 6)
    _c("search_min_level_not_the_model",
       lambda e: e.train("search.min_level=4", mode="search"), "search.min_level", "4",
       "task.model.min_level is 3"),
    _c("search_max_level_not_the_model",
       lambda e: e.train("search.max_level=6,search.num_cells=5", mode="search"),
       "search.max_level"),
    _c("search_too_few_cells", lambda e: e.train("search.num_cells=3", mode="search"),
       "search.num_cells"),
    _c("search_unknown_algorithm", lambda e: e.train("search.algorithm=grid", mode="search"),
       "search.algorithm", "grid"),
    _c("search_bad_baseline", lambda e: e.train("search.baselines=[nosuchspec]", mode="search"),
       "search.baselines[0]", "nosuchspec"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.name)
def test_bad_input_is_one_line_and_leaves_model_dir_alone(case, env, capsys):
  argv = case.argv(env)
  watched = [d for d in (env.model_dir, env.trained_dir)]
  before = {d: snapshot(d) for d in watched}
  existed = {d: os.path.exists(d) for d in watched}
  code, err = run_in_process(argv, capsys)
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert code == 2, err
  assert len(lines) == 1, err
  assert "Traceback" not in err, err
  for culprit in case.culprits(env):
    assert culprit in lines[0], (culprit, lines[0])
  for d in watched:
    assert os.path.exists(d) == existed[d], d
    assert snapshot(d) == before[d], d


# Real processes: the top-level handler, the exit code, and --verbose.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["backup_interval_0", "spec_index_out_of_range",
                                  "annotation_json_malformed"])
def test_bad_input_in_a_real_process(name, env):
  case = next(c for c in CLI_CASES if c.name == name)
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), *case.argv(env)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert all(c in lines[0] for c in case.culprits(env)), lines
  assert not os.path.exists(env.model_dir)


def test_verbose_shows_the_traceback(env):
  case = next(c for c in CLI_CASES if c.name == "backup_interval_0")
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), *case.argv(env), "--verbose"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode != 0
  assert "Traceback" in proc.stderr and "ConfigError: trainer.backup_interval" in proc.stderr


# ------------------------------------------------------------------------------ served tensors

@pytest.fixture(scope="module")
def served(data_root, tmp_path_factory):
  """The SavedModel of the tiny model, loaded back as a server loads it."""
  import tensorflow as tf
  from nasfpn_tf.serving import export_lib
  out = str(tmp_path_factory.mktemp("served"))
  path = export_lib.export_from_model_dir(data_root.trained_dir, out, "saved_model")
  return tf.saved_model.load(path).signatures


def _jpeg(env: Env) -> bytes:
  with open(os.path.join(env.val_dir, "000001.jpg"), "rb") as f:
    return f.read()


SERVED_CASES = {
    "float_dtype": (lambda t, e: ("serving_default", {"images": t.zeros([1, 32, 32, 3])}),
                    "uint8"),
    "rank_3": (lambda t, e: ("serving_default", {"images": t.zeros([32, 32, 3], t.uint8)}),
               "images"),
    "four_channels": (lambda t, e: ("serving_default", {"images": t.zeros([1, 8, 8, 4], t.uint8)}),
                      "[?,?,?,3]"),
    "zero_sized": (lambda t, e: ("serving_default", {"images": t.zeros([1, 0, 8, 3], t.uint8)}),
                   "zero height or width"),
    "empty_batch": (lambda t, e: ("serving_default", {"images": t.zeros([0, 8, 8, 3], t.uint8)}),
                    "the batch holds no image"),
    "encoded_not_an_image": (lambda t, e: ("serve_encoded", {"encoded_images": t.constant(
        [_jpeg(e), b"not an image"])}), "serve_encoded: image] [1] [of the batch"),
    "encoded_truncated_jpeg": (lambda t, e: ("serve_encoded", {"encoded_images": t.constant(
        [_jpeg(e), _jpeg(e), _truncated_jpeg(e)])}), "serve_encoded: image] [2] [of the batch"),
    "encoded_truncated_png": (lambda t, e: ("serve_encoded", {"encoded_images": t.constant(
        [_truncated_png(e), _jpeg(e)])}), "serve_encoded: image] [0] [of the batch"),
    "encoded_empty_batch": (lambda t, e: ("serve_encoded", {"encoded_images": t.constant(
        [], t.string)}), "the batch holds no image"),
    "encoded_scalar": (lambda t, e: ("serve_encoded", {"encoded_images": t.constant(
        _jpeg(e))}), "encoded_images"),
    "raw_wrong_size": (lambda t, e: ("serve_raw", {"images": t.zeros([1, 64, 64, 3])}),
                       "[?,128,128,3]"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SERVED_CASES))
def test_bad_served_tensor_names_the_input(name, served, data_root):
  import tensorflow as tf
  make, culprit = SERVED_CASES[name]
  signature, inputs = make(tf, data_root)
  with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)) as info:
    served[signature](**inputs)
  # TensorFlow wraps the graph's message ("Graph execution error:", the node); the line that
  # carries it names the input.
  lines = [line for line in str(info.value).splitlines() if culprit in line]
  assert lines, str(info.value)[:2000]
  # The server still answers a good request afterwards.
  good = served["serve_encoded"](encoded_images=tf.constant([_jpeg(data_root)]))
  assert good["detection_boxes"].shape == (1, 100, 4)


# ------------------------------------------------------------------------------ TFLite input

TFLITE_CASES = {
    "wrong_size": (np.zeros((64, 64, 3), np.float32), "(64, 64, 3)"),
    "four_channels": (np.zeros((128, 128, 4), np.float32), "(128, 128, 4)"),
    "batch_of_two": (np.zeros((2, 128, 128, 3), np.float32), "(2, 128, 128, 3)"),
    "strings": (np.full((128, 128, 3), "x"), "dtype <U1"),
    "nan": (np.full((128, 128, 3), np.nan, np.float32), "NaN"),
}


@pytest.mark.parametrize("name", sorted(TFLITE_CASES))
def test_bad_tflite_input_names_the_file_and_the_problem(name):
  from nasfpn_tf.serving.export_lib import TFLiteDetector
  # The input check runs before the interpreter: no converted file is needed to test it.
  detector = object.__new__(TFLiteDetector)
  detector.path, detector.input_shape = "model_float32.tflite", (1, 128, 128, 3)
  detector.input_dtype = np.dtype(np.float32)
  image, culprit = TFLITE_CASES[name]
  with pytest.raises(ValueError) as info:
    detector._input(image)  # pylint: disable=protected-access
  assert "model_float32.tflite" in str(info.value) and culprit in str(info.value)
  assert "\n" not in str(info.value)
  assert detector._input(np.zeros((128, 128, 3), np.uint8)).shape == (1, 128, 128, 3)


# ------------------------------------------------------------------------------ skipped images

SKIPPED_IMAGES = {
    "jpeg_truncated": _truncated_jpeg,
    "png_truncated_as_jpg": _truncated_png,
    "jpeg_garbage": lambda e: b"\xff\xd8\xff" + os.urandom(2000),
    "image_empty_file": lambda e: b"",
}


@pytest.mark.parametrize("name", sorted(SKIPPED_IMAGES))
def test_broken_image_is_skipped_by_name_and_the_rest_decodes(name, env, caplog):
  from nasfpn_tf.data import coco_reader
  annotation_file, folder = env.image_copy("000002.jpg", SKIPPED_IMAGES[name](env))
  with caplog.at_level("WARNING"):
    index, info = coco_reader.load_coco_index(annotation_file, folder, on_bad="skip")
  assert [r.image_id for r in index] == [1, 3, 4]
  assert info.skipped["image_unreadable"] == 1
  bad_path = os.path.join(folder, "000002.jpg")
  assert any(bad_path in r.getMessage() and "image id=2" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  # What was kept decodes to the end: nothing is left to fail in the middle of training.
  images = [x["image"].shape for x in coco_reader.dataset_from_index(index)]
  assert images == [(128, 128, 3)] * 3
