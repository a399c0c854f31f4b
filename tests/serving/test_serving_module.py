"""Fast serving tests on an untrained tiny model: box mapping, NMS equivalence, input checks,
atomic exports and model loading. No training, no TFLite conversion."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nasfpn_tf.configs.loading import load_config, save_yaml
from nasfpn_tf.data import preprocess
from nasfpn_tf.evaluation.coco_evaluator import to_original_frame
from nasfpn_tf.modeling.factory import build_model
from nasfpn_tf.modeling.layers.detection_generator import DetectionGenerator
from nasfpn_tf.ops.anchor import AnchorGenerator
from nasfpn_tf.serving import detection_module, export_lib

from serving_helpers import SMALL_MODEL

# Score threshold 0: an untrained model (prior 0.01) must still produce detections.
UNTRAINED = f"{SMALL_MODEL},task.model.detection.score_threshold=0.0"


@pytest.fixture(scope="module")
def config():
  return load_config(params_override=UNTRAINED)


@pytest.fixture(scope="module")
def model(config):
  return build_model(config.task.model)


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def test_boxes_map_back_to_the_original_image():
  image = np.zeros((200, 100, 3), np.uint8)
  _, info = preprocess.resize_and_crop_image(image, [128, 128])
  boxes = np.array([[20.0, 10.0, 100.0, 50.0], [0.0, 0.0, 200.0, 100.0]], np.float32)
  # Forward with the training code, backward with the serving code.
  scaled, _ = preprocess.resize_and_crop_boxes(boxes, info, [128, 128])
  np.testing.assert_allclose(scaled[0], [12.8, 6.4, 64.0, 32.0], atol=1e-4)
  back = detection_module.boxes_to_image_frame(scaled[None], info[None])
  np.testing.assert_allclose(back[0], boxes, atol=1e-3)
  np.testing.assert_allclose(back[0], to_original_frame(scaled.numpy(), info.numpy()), atol=1e-4)


def _generators(pre_nms_top_k: int):
  anchors = AnchorGenerator(3, 4, num_scales=1, aspect_ratios=(1.0,), anchor_size=4)
  levels = anchors((64, 64))
  flat = np.concatenate(list(levels.values()))
  kwargs = dict(level_sizes=[len(a) for a in levels.values()], image_size=(64, 64),
                pre_nms_top_k=pre_nms_top_k, score_threshold=0.05, iou_threshold=0.5,
                max_detections=20)
  return DetectionGenerator(nms="combined", **kwargs), DetectionGenerator(nms="padded",
                                                                          **kwargs), flat


def test_padded_nms_gives_the_combined_nms_detections():
  combined, padded, anchors = _generators(pre_nms_top_k=1000)
  rng = np.random.default_rng(0)
  n = len(anchors)
  cls = rng.normal(-3.0, 1.5, (1, n, 4)).astype(np.float32)
  # One object scoring high for two classes: both detections must survive.
  cls[0, 5, 1], cls[0, 5, 3] = 4.0, 3.5
  box = rng.normal(0.0, 0.2, (1, n, 4)).astype(np.float32)
  a = {k: np.asarray(v) for k, v in combined(cls, box, anchors).items()}
  b = {k: np.asarray(v) for k, v in padded(cls, box, anchors).items()}
  num = int(a["num_detections"][0])
  assert num == int(b["num_detections"][0]) > 2
  np.testing.assert_allclose(b["detection_scores"][0, :num], a["detection_scores"][0, :num],
                             rtol=1e-6)
  np.testing.assert_array_equal(b["detection_classes"][0, :num], a["detection_classes"][0, :num])
  np.testing.assert_allclose(b["detection_boxes"][0, :num], a["detection_boxes"][0, :num],
                             atol=1e-4)
  top_two = set(map(int, b["detection_classes"][0, :2]))
  assert top_two == {1, 3}


def test_serving_functions_match_the_model_on_a_non_square_image(model):
  module = detection_module.DetectionModule(model)
  image = np.random.default_rng(1).integers(0, 256, (90, 150, 3), dtype=np.uint8)
  served = module.serve_images(tf.constant(image[None]))
  encoded = module.serve_encoded(tf.constant([_png(image), _png(image)]))
  resized, info = preprocess.resize_and_crop_image(image, model.input_size)
  ref = model.detect(resized[None])
  n = int(ref["num_detections"][0])
  assert n > 0 and int(served["num_detections"][0]) == n
  expected = to_original_frame(np.asarray(ref["detection_boxes"][0, :n]), info.numpy())
  np.testing.assert_allclose(served["detection_boxes"][0, :n], expected, atol=1e-3)
  np.testing.assert_allclose(served["detection_scores"][0, :n], ref["detection_scores"][0, :n],
                             atol=1e-6)
  assert (np.asarray(served["detection_boxes"])[0, :n, 2] <= 90).all()
  for key in detection_module.DETECTION_KEYS:
    np.testing.assert_allclose(encoded[key][1], served[key][0], atol=1e-4)


def test_serve_encoded_takes_every_format_training_reads(model):
  # WebP used to pass the training checks and be refused by serve_encoded.
  from nasfpn_tf.data import coco_reader
  assert coco_reader._DECODABLE_FORMATS == tuple(preprocess.IMAGE_FORMATS)
  assert "WEBP" in preprocess.IMAGE_FORMATS
  image = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
  module = detection_module.DetectionModule(model)
  reference = module.serve_images(tf.constant(image[None]))
  for name in preprocess.IMAGE_FORMATS:
    buf = io.BytesIO()
    # Lossless where the format has a choice, so every format decodes to the same pixels.
    Image.fromarray(image).save(buf, format=name, **({"lossless": True} if name == "WEBP" else
                                                     {"quality": 100} if name == "JPEG" else {}))
    served = module.serve_encoded(tf.constant([buf.getvalue()]))
    assert int(served["num_detections"][0]) == int(reference["num_detections"][0]), name
    if name in ("PNG", "BMP", "WEBP"):   # lossless; JPEG and GIF (a palette) are not
      np.testing.assert_allclose(served["detection_scores"], reference["detection_scores"],
                                 atol=1e-5, err_msg=name)


def test_bad_images_raise_clear_errors(model):
  module = detection_module.DetectionModule(model)
  signatures = module.signatures()
  serve = tf.function(signatures["serving_default"][0],
                      input_signature=signatures["serving_default"][1])
  encoded = tf.function(signatures["serve_encoded"][0],
                        input_signature=signatures["serve_encoded"][1])
  with pytest.raises(tf.errors.InvalidArgumentError, match="zero height or width"):
    serve(tf.zeros([1, 0, 12, 3], tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match="the batch holds no image"):
    serve(tf.zeros([0, 12, 12, 3], tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match="image.*1.*is not a JPEG, PNG"):
    encoded(tf.constant([_png(np.zeros((8, 8, 3), np.uint8)), b"not an image"]))


def test_saved_model_export_failure_keeps_the_previous_export(model, config, tmp_path,
                                                              monkeypatch):
  export_dir = str(tmp_path)
  previous = os.path.join(export_dir, export_lib.SAVED_MODEL_DIR)
  os.makedirs(previous)
  open(os.path.join(previous, "marker"), "w").close()

  def crash(signatures, path, model=None):  # writes part of a SavedModel, then dies
    os.makedirs(path)
    open(os.path.join(path, "saved_model.pb"), "w").close()
    raise OSError("disk full")

  monkeypatch.setattr(export_lib, "_write_saved_model", crash)
  with pytest.raises(OSError, match="disk full"):
    export_lib.export_saved_model(model, export_dir, config, labels={1: "a"})
  assert os.listdir(export_dir) == [export_lib.SAVED_MODEL_DIR]
  assert os.listdir(previous) == ["marker"]


def test_tflite_variant_failures_leave_no_file(model, config, tmp_path, monkeypatch):
  def fake_convert(saved_model, variant, calibration=None):
    if variant == "float16":
      raise ValueError("converter says no\nsecond line")
    return b"TFL3 pretend flatbuffer"

  real_write = export_lib.file_io.write_bytes

  def write(path, data):  # the dynamic_int8 write dies half way through
    if "dynamic_int8" in path:
      raise OSError("disk full")
    return real_write(path, data)

  monkeypatch.setattr(export_lib, "convert_tflite", fake_convert)
  monkeypatch.setattr(export_lib.file_io, "write_bytes", write)
  monkeypatch.setattr(export_lib, "_write_saved_model", lambda signatures, path: None)
  # What an export killed with SIGKILL left (its pid is gone): removed by this export.
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / f"model_float16.tmp-{dead.pid}-0123abcd.tflite").write_bytes(b"half")
  os.makedirs(tmp_path / f"saved_model.tmp-{dead.pid}-0123abcd" / "variables")
  variants = ["float32", "float16", "dynamic_int8"]
  with pytest.raises(export_lib.ExportError) as err:
    export_lib.export_tflite(model, str(tmp_path), variants, config, labels={1: "a"})
  assert err.value.failures == {"float16": "converter says no second line",
                                "dynamic_int8": "disk full"}
  assert sorted(os.listdir(tmp_path)) == ["config.yaml", "label_map.json",
                                          "model_float32.tflite"]


def test_a_checkpoint_and_config_are_enough_to_export(model, config, tmp_path):
  model.save_weights(str(tmp_path / export_lib.CHECKPOINT_FILE))
  save_yaml(config, str(tmp_path / export_lib.CONFIG_FILE))
  loaded, loaded_config = export_lib.load_trained_model(str(tmp_path))
  assert loaded_config.task.model == config.task.model
  for a, b in zip(model.weights, loaded.weights):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_arguments_are_checked(tmp_path):
  with pytest.raises(export_lib.ExportError, match="model.keras"):
    export_lib.export_from_model_dir(str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="export_format"):
    export_lib.export_from_model_dir(str(tmp_path), str(tmp_path / "out"), "onnx")
  with pytest.raises(TypeError, match="num_calibration_images"):
    export_lib.export_from_model_dir(str(tmp_path), str(tmp_path / "out"),
                                     num_calibration_images=5)


def test_resolve_config_keeps_the_trained_model_section(config):
  other = load_config(params_override=f"{UNTRAINED},task.model.num_classes=9,"
                                      "task.validation_data.embedded_num_images=7")
  merged = export_lib.resolve_config(None, other, config)
  assert merged.task.model == config.task.model
  assert merged.task.validation_data.embedded_num_images == 7
  assert other.task.model.num_classes == 9  # the given config is left as it was
