"""TFLite files of a small trained model: they convert, run, match Keras, keep their AP."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nasfpn_tf.serving import detection_module, export_lib
from serving_helpers import ROOT, builtin_op_names, operator_names

BUILTIN_OPS = builtin_op_names()

pytestmark = pytest.mark.slow

# AP (0..1) a quantized file may lose against float32 on the embedded validation split: the
# bound nasfpn_tf issue 13 sets for int8 (export/parity.py warns past it too).
AP_BOUND = {"float16": 0.01, "dynamic_int8": 0.01, "full_int8": 0.01}


@pytest.fixture(scope="module")
def detectors(export_dir):
  return {v: export_lib.TFLiteDetector(export_lib.tflite_path(export_dir, v))
          for v in export_lib.TFLITE_VARIANTS}


@pytest.fixture(scope="module")
def aps(detectors, validation):
  """COCO AP of each variant's detections on the validation split."""
  out = {}
  for variant, detector in detectors.items():
    detections = [detector.detect(image) for image in validation.images]
    out[variant] = validation.ap(detections)["AP"]
  return out


def test_every_variant_runs_with_builtin_ops_only(detectors):
  for variant, detector in detectors.items():
    signatures = detector.interpreter.get_signature_list()
    assert set(signatures) == {"serving_default", "raw"}, variant
    assert detector.input_shape == (1, 128, 128, 3)
    expected = np.uint8 if variant == "full_int8" else np.float32
    assert detector.input_dtype == expected, variant
    # The op list of every subgraph: TFLite builtins only (no custom or Flex/select-TF ops,
    # which a plain interpreter on a device cannot run).
    ops = operator_names(detector.path)
    assert ops and not [o for o in ops if o not in BUILTIN_OPS or o == "CUSTOM"], (variant, ops)
    assert "NON_MAX_SUPPRESSION_V4" in ops, variant   # the padded NMS is inside the file
    out = detector.detect(np.full((128, 128, 3), 127.0, np.float32))
    assert out["detection_boxes"].shape == (1, 100, 4)
    assert out["detection_scores"].shape == (1, 100)
    assert out["detection_classes"].dtype == np.int32
    # num_detections counts exactly the scored rows of the padded output.
    n = int(out["num_detections"][0])
    scores = out["detection_scores"][0]
    assert np.all(scores[:n] > 0) and np.all(scores[n:] == 0), (variant, n, scores)


def test_full_int8_network_is_quantized(detectors, export_dir):
  types = [t["dtype"] for t in detectors["full_int8"].interpreter.get_tensor_details()]
  assert sum(t == np.int8 for t in types) > 50
  sizes = {v: os.path.getsize(export_lib.tflite_path(export_dir, v))
           for v in export_lib.TFLITE_VARIANTS}
  assert sizes["full_int8"] < sizes["float32"] / 2
  assert sizes["dynamic_int8"] < sizes["float32"] / 2
  assert sizes["float16"] < sizes["float32"] * 0.6


def test_quantized_files_keep_the_box_path_float(export_dir):
  """No int8 tensor where the box path must stay float: dynamic_int8's post-processing (a
  constant that a gather reads, the anchors, became int8 there), full_int8's box predictor
  and concatenation of the levels' outputs (the debugger's denylist left them int8)."""
  # dynamic_int8 keeps its conv weights in int8, the box predictor's included.
  scopes = {"dynamic_int8": [detection_module.PADDED_GENERATOR_NAME],
            "full_int8": [detection_module.BOX_REGRESSOR_NAME,
                          detection_module.FLAT_OUTPUTS_NAME + "/concat"]}
  for variant, names in scopes.items():
    with open(export_lib.tflite_path(export_dir, variant), "rb") as f:
      leaked = export_lib.quantized_float_tensors(f.read(), names)
    assert not leaked, (variant, leaked[:5])


def test_float32_matches_keras(detectors, keras_model, validation):
  generator = detection_module.padded_generator(keras_model)
  detector = detectors["float32"]
  for image in validation.images[:6]:
    raw = keras_model(image[None], training=False)
    lite_raw = detector.raw(image)
    for key in ("cls_outputs", "box_outputs"):
      np.testing.assert_allclose(lite_raw[key], np.asarray(raw[key]), atol=1e-4)
    ref = {k: np.asarray(v) for k, v in
           generator(raw["cls_outputs"], raw["box_outputs"], keras_model.anchors).items()}
    got = detector.detect(image)
    n = int(ref["num_detections"][0])
    assert int(got["num_detections"][0]) == n
    np.testing.assert_allclose(got["detection_boxes"][0, :n], ref["detection_boxes"][0, :n],
                               atol=1e-3)
    np.testing.assert_allclose(got["detection_scores"][0, :n], ref["detection_scores"][0, :n],
                               atol=1e-5)
    np.testing.assert_array_equal(got["detection_classes"][0, :n],
                                  ref["detection_classes"][0, :n])


def test_float32_ap_equals_keras_ap(aps, keras_model, validation):
  detect = keras_model.detect
  detections = [{k: np.asarray(v) for k, v in detect(image[None]).items()}
                for image in validation.images]
  keras_ap = validation.ap(detections)["AP"]
  assert keras_ap > 0.05, "the fixture model did not learn: the AP bounds would mean nothing"
  assert abs(aps["float32"] - keras_ap) < 0.005


@pytest.mark.parametrize("variant", sorted(AP_BOUND))
def test_quantized_ap_within_bound_of_float32(aps, variant):
  assert aps[variant] > aps["float32"] - AP_BOUND[variant], aps


def test_cli_reports_a_variant_it_cannot_produce(trained, tmp_path):
  out = tmp_path / "export"
  cmd = [sys.executable, os.path.join(ROOT, "export", "export_tflite.py"),
         f"--model_dir={trained.model_dir}", f"--export_dir={out}", "--variants=full_int8",
         "--params_override=task.validation_data.source=coco,"
         "task.validation_data.annotation_file=/nonexistent/val.json,"
         "task.validation_data.image_dir=/nonexistent"]
  # PYTHONPATH: the script imports this tree's nasfpn_tf, not an installed copy.
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("full_int8:")]
  assert len(lines) == 1 and "no calibration data" in lines[0], proc.stderr[-2000:]
  assert not os.path.exists(export_lib.tflite_path(str(out), "full_int8"))
  assert not [f for f in os.listdir(out) if f.startswith(".")]
