"""The SavedModel of a small trained model, loaded in a fresh process like a server would."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.data import preprocess
from nasfpn_tf.evaluation.coco_evaluator import to_original_frame
from nasfpn_tf.serving import export_lib
from serving_helpers import non_square

pytestmark = pytest.mark.slow

# Runs in a new interpreter: nothing of nasfpn_tf is imported, only TensorFlow.
_SERVE_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

path, work = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(path)
sigs = loaded.signatures
image = np.load(f"{work}/image.npy")
png = open(f"{work}/image.png", "rb").read()
out = {"signatures": sorted(sigs.keys())}
arrays = {}
for k, v in sigs["serving_default"](images=tf.constant(image[None])).items():
  arrays[f"images/{k}"] = v.numpy()
for k, v in sigs["serve_encoded"](encoded_images=tf.constant([png, png])).items():
  arrays[f"encoded/{k}"] = v.numpy()
pre = np.load(f"{work}/preprocessed.npy")
for k, v in sigs["serve_raw"](images=tf.constant(pre[None])).items():
  arrays[f"raw/{k}"] = v.numpy()

bad = {
    "float_dtype": lambda: sigs["serving_default"](images=tf.constant(image[None], tf.float32)),
    "rank_3": lambda: sigs["serving_default"](images=tf.constant(image)),
    "four_channels": lambda: sigs["serving_default"](images=tf.zeros([1, 8, 8, 4], tf.uint8)),
    "zero_sized": lambda: sigs["serving_default"](images=tf.zeros([1, 0, 8, 3], tf.uint8)),
    "empty_batch": lambda: sigs["serving_default"](images=tf.zeros([0, 8, 8, 3], tf.uint8)),
    "undecodable": lambda: sigs["serve_encoded"](encoded_images=tf.constant([png, b"\x00junk"])),
    "truncated_png": lambda: sigs["serve_encoded"](encoded_images=tf.constant([png[:60]])),
    "scalar_string": lambda: sigs["serve_encoded"](encoded_images=tf.constant(png)),
}
errors = {}
for name, call in bad.items():
  try:
    call()
    errors[name] = "no error"
  except Exception as e:
    errors[name] = f"{type(e).__name__}: {' '.join(str(e).split())}"
out["errors"] = errors
# The process must still serve after all of that.
out["after_errors"] = int(sigs["serving_default"](images=tf.constant(image[None]))
                          ["num_detections"][0])
np.savez(f"{work}/outputs.npz", **arrays)
json.dump(out, open(f"{work}/report.json", "w"))
"""


@pytest.fixture(scope="module")
def served(export_dir, validation, tmp_path_factory):
  """Runs the SavedModel's signatures in a fresh process on a non-square validation image."""
  work = tmp_path_factory.mktemp("served")
  image = non_square(validation.originals[0])
  np.save(work / "image.npy", image)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")  # lossless: the same pixels as image.npy
  (work / "image.png").write_bytes(buf.getvalue())
  resized, info = preprocess.resize_and_crop_image(image, [128, 128])
  np.save(work / "preprocessed.npy", resized.numpy())
  path = os.path.join(export_dir, export_lib.SAVED_MODEL_DIR)
  proc = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, path, str(work)],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((work / "report.json").read_text())
  outputs = dict(np.load(work / "outputs.npz"))
  return report, outputs, resized.numpy(), info.numpy()


def test_signatures(served):
  report, *_ = served
  assert report["signatures"] == ["serve_encoded", "serve_raw", "serving_default"]


def test_detections_equal_keras_mapped_back(served, keras_model):
  _, outputs, resized, info = served
  ref = {k: np.asarray(v) for k, v in keras_model.detect(resized[None]).items()}
  n = int(ref["num_detections"][0])
  assert n > 0
  expected_boxes = to_original_frame(ref["detection_boxes"][0, :n], info)
  for source in ("images", "encoded"):
    got = {k.split("/")[1]: v for k, v in outputs.items() if k.startswith(source + "/")}
    assert int(got["num_detections"][0]) == n
    np.testing.assert_allclose(got["detection_boxes"][0, :n], expected_boxes, atol=1e-3)
    np.testing.assert_allclose(got["detection_scores"][0, :n],
                               ref["detection_scores"][0, :n], atol=1e-5)
    np.testing.assert_array_equal(got["detection_classes"][0, :n],
                                  ref["detection_classes"][0, :n])
    # Padding rows are zero, and boxes lie inside the 96 x 160 input image.
    assert not got["detection_scores"][0, n:].any()
    assert (got["detection_boxes"][0, :n] <= [96, 160, 96, 160]).all()
  # Category ids, not indices: the shapes set numbers its classes 1..5.
  assert set(ref["detection_classes"][0, :n]) <= {1, 2, 3, 4, 5}


def test_raw_outputs_equal_keras(served, keras_model):
  _, outputs, resized, _ = served
  ref = keras_model(resized[None], training=False)
  for key in ("cls_outputs", "box_outputs"):
    np.testing.assert_allclose(outputs[f"raw/{key}"], np.asarray(ref[key]), atol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("float_dtype", "expected to be a uint8 tensor but is a float tensor"),
    ("rank_3", "Shape of tensor images [96,160,3] is not compatible with expected shape "
               "[?,?,?,3]"),
    ("four_channels", "is not compatible with expected shape [?,?,?,3]"),
    ("zero_sized", "serving_default: the images have zero height or width"),
    ("empty_batch", "serving_default: the batch holds no image"),
    ("undecodable", "serve_encoded: image] [1] [of the batch ("),
    ("truncated_png", "serve_encoded: image] [0] [of the batch ("),
    ("scalar_string", "Shape of tensor encoded_images [] is not compatible"),
])
def test_bad_input_gives_a_clear_error(served, case, message):
  report, *_ = served
  error = report["errors"][case]
  assert error.startswith("InvalidArgumentError"), error
  assert message in error, error


def test_the_server_survives_bad_input(served):
  report, outputs, *_ = served
  assert report["after_errors"] == int(outputs["images/num_detections"][0])


def test_label_map_and_config_beside_the_model(export_dir, trained):
  labels = json.load(open(os.path.join(export_dir, export_lib.LABEL_MAP_FILE)))
  assert labels == {"1": "circle", "2": "rectangle", "3": "triangle", "4": "ring", "5": "star"}
  config = load_config(os.path.join(export_dir, export_lib.CONFIG_FILE))
  assert config == trained.config
  extra = os.path.join(export_dir, export_lib.SAVED_MODEL_DIR, "assets.extra")
  assert sorted(os.listdir(extra)) == ["config.yaml", "label_map.json"]
  assert yaml.safe_load(open(os.path.join(extra, "config.yaml"))) == \
      yaml.safe_load(open(os.path.join(export_dir, export_lib.CONFIG_FILE)))
  assert not [f for f in os.listdir(export_dir) if f.startswith(".")]


def test_run_py_export_without_a_trained_model_names_the_folder(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, os.path.join(root, "run.py"), "--mode=export",
                         f"--model_dir={tmp_path}"], capture_output=True, text=True,
                        timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert proc.returncode == 2
  assert f"error: model: {tmp_path} holds neither" in proc.stderr
  assert "Traceback" not in proc.stderr
