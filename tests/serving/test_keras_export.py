"""Keras' `model.export(path, format=...)` on a RetinaNetModel writes the serving artifacts.

An untrained tiny model (no training) whose head is re-initialised so that its scores are
spread out (the prior-initialised head scores every anchor ~0.01: NMS orders near-ties, and
two runtimes may order them differently). Each artifact is loaded in a fresh process that
does not import nasfpn_tf (the files stand alone), runs one image, and its detections are
compared with the in-memory model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.factory import build_model

from serving_helpers import SMALL_MODEL, builtin_op_names, operator_names

pytestmark = pytest.mark.slow  # a TFLite conversion and two TensorFlow subprocesses

SIZE = 128
# The in-memory model's outputs against the artifacts'. The same float32 graph, but another
# process sums in another order (logits of this head reach ~6: 1.7e-5 measured for the
# SavedModel), and TFLite's kernels differ more, hence its looser raw-output bound.
RAW_ATOL, RAW_RTOL = {"saved_model": 5e-5, "litert": 1e-4}, 1e-5
BOX_ATOL, SCORE_ATOL = 1e-3, 1e-5

_LOAD_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
saved_model, tflite, work = sys.argv[1:4]
image = np.load(f"{work}/image.npy")
out, arrays = {}, {}
loaded = tf.saved_model.load(saved_model)
out["signatures"] = sorted(loaded.signatures)
out["num_variables"] = len(loaded.variables)
sig = loaded.signatures
for k, v in sig["serving_default"](images=tf.constant(image[None])).items():
  arrays[f"saved_model/{k}"] = v.numpy()
for k, v in sig["serve_raw"](images=tf.constant(image[None].astype(np.float32))).items():
  arrays[f"saved_model/raw/{k}"] = v.numpy()
try:
  from ai_edge_litert.interpreter import Interpreter
except ImportError:
  Interpreter = tf.lite.Interpreter
interpreter = Interpreter(model_path=tflite)
out["tflite_signatures"] = sorted(interpreter.get_signature_list())
runner = interpreter.get_signature_runner("serving_default")
details = runner.get_input_details()["images"]
out["tflite_input"] = [list(map(int, details["shape"])), np.dtype(details["dtype"]).name]
for k, v in runner(images=image[None].astype(np.float32)).items():
  arrays[f"litert/{k}"] = v
for k, v in interpreter.get_signature_runner("raw")(
    images=image[None].astype(np.float32)).items():
  arrays[f"litert/raw/{k}"] = v
out["modules"] = sorted(m for m in sys.modules if m.startswith("nasfpn_tf"))
np.savez(f"{work}/outputs.npz", **arrays)
json.dump(out, open(f"{work}/report.json", "w"))
"""


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(0)
  model = build_model(load_config(params_override=SMALL_MODEL).task.model)
  # Spread-out scores: He-normal class-branch kernels, the class bias at logit -2. Box
  # deltas stay small (large ones clip boxes to zero area, whose NMS order is arbitrary).
  rng = np.random.default_rng(0)
  for layer, scale in [*[(c, 1.0) for c in model.head.class_convs], (model.head.classifier, 1.0),
                       (model.head.box_regressor, 0.05)]:
    fan_in = int(np.prod(layer.kernel.shape[:-1]))
    layer.kernel.assign(rng.normal(0, scale * np.sqrt(2 / fan_in), layer.kernel.shape)
                        .astype(np.float32))
  model.head.classifier.bias.assign(np.full(model.head.classifier.bias.shape, -2.0,
                                            np.float32))
  return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
  """Both formats through `model.export`, loaded and run in a fresh process."""
  work = tmp_path_factory.mktemp("keras_export")
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
  image[20:70, 30:100] = (250, 40, 40)  # a flat box on noise
  np.save(work / "image.npy", image)
  saved_model, tflite = str(work / "saved_model"), str(work / "model.tflite")
  model.export(saved_model, format="tf_saved_model", verbose=False)
  model.export(tflite, format="litert", verbose=False)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
  proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, saved_model, tflite, str(work)],
                        capture_output=True, text=True, timeout=300, env=env, cwd=str(work))
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((work / "report.json").read_text())
  return report, dict(np.load(work / "outputs.npz")), image, tflite


def _assert_same_detections(got: dict, ref: dict, what: str) -> None:
  n = int(ref["num_detections"][0])
  assert int(got["num_detections"][0]) == n, what
  np.testing.assert_allclose(got["detection_boxes"][0, :n], ref["detection_boxes"][0, :n],
                             atol=BOX_ATOL, err_msg=what)
  np.testing.assert_allclose(got["detection_scores"][0, :n], ref["detection_scores"][0, :n],
                             atol=SCORE_ATOL, err_msg=what)
  np.testing.assert_array_equal(got["detection_classes"][0, :n],
                                ref["detection_classes"][0, :n], err_msg=what)


def test_the_artifacts_stand_alone_with_the_serving_signatures(exported, model):
  report, *_ = exported
  assert report["modules"] == []  # loaded without nasfpn_tf
  assert report["signatures"] == ["serve_encoded", "serve_raw", "serving_default"]
  # The network's weights are tracked, as Keras' own export tracks them.
  assert report["num_variables"] == (len(model.backbone.weights) + len(model.decoder.weights)
                                     + len(model.head.weights))
  assert report["tflite_signatures"] == ["raw", "serving_default"]
  assert report["tflite_input"] == [[1, SIZE, SIZE, 3], "float32"]


def test_litert_file_holds_builtin_ops_only(exported):
  *_, tflite = exported
  ops = operator_names(tflite)
  builtin = builtin_op_names()
  assert ops and not [o for o in ops if o not in builtin or o == "CUSTOM"], ops
  assert "NON_MAX_SUPPRESSION_V4" in ops  # the padded NMS is inside the file


@pytest.mark.parametrize("source", ["saved_model", "litert"])
def test_detections_equal_the_in_memory_model(exported, model, source):
  _, outputs, image, _ = exported
  pixels = image[None].astype(np.float32)
  raw = model(pixels, training=False)
  for key in ("cls_outputs", "box_outputs"):
    np.testing.assert_allclose(outputs[f"{source}/raw/{key}"], np.asarray(raw[key]),
                               atol=RAW_ATOL[source], rtol=RAW_RTOL, err_msg=key)
  # The image is at the model's input size: its own pixels are the model-input pixels.
  ref = {k: np.asarray(v) for k, v in model.detect(pixels).items()}
  n = int(ref["num_detections"][0])
  assert n > 10, "too few detections for the comparison to mean anything"
  got = {k.split("/", 1)[1]: v for k, v in outputs.items()
         if k.startswith(source + "/") and "/raw/" not in k}
  _assert_same_detections(got, ref, source)


def test_export_options_are_checked(model, tmp_path):
  with pytest.raises(ValueError, match=r"to end with '\.tflite'"):
    model.export(str(tmp_path / "model.bin"), format="litert", verbose=False)
  with pytest.raises(TypeError, match=r"unknown options \['variants'\]"):
    model.export(str(tmp_path / "m.tflite"), format="litert", variants=["float32"])
  with pytest.raises(ValueError, match="input_signature is not taken"):
    model.export(str(tmp_path / "sm"), input_signature=[None])
  assert not os.listdir(tmp_path)
