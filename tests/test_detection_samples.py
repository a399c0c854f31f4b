"""The detections PNG: a trained model's boxes drawn on validation images."""

import numpy as np
from PIL import Image

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.data import preprocess
from nasfpn_tf.evaluation.coco_evaluator import to_original_frame
from nasfpn_tf.serving.detection_samples import predict_image, write_detection_samples
from nasfpn_tf.modeling.factory import build_model
from nasfpn_tf.serving.detection_module import DetectionModule
from nasfpn_tf.visualize import draw_detection_grid


def _tiny_config(tmp_path):
  return load_config("configs/shapes_fpn.yaml", [
      "task.model.input_size=[128,128]", "task.model.backbone.depth=10",
      "task.model.backbone.width_multiplier=0.25", "task.model.decoder.filters=16",
      "task.model.head.filters=16", "task.model.head.num_convs=1",
      f"task.validation_data.embedded_dir={tmp_path}", "task.validation_data.embedded_num_images=4",
      "task.validation_data.embedded_image_size=96"])


def test_predict_image_maps_boxes_to_the_image(tmp_path):
  # Score threshold 0: an untrained model detects something, so the boxes are checked.
  config = _tiny_config(tmp_path)
  config.task.model.detection.score_threshold = 0.0
  model = build_model(config.task.model)
  image = np.random.default_rng(0).integers(0, 255, (96, 120, 3), dtype=np.uint8)
  det = predict_image(DetectionModule(model), image)
  n = int(det["num_detections"])
  assert n == config.task.model.detection.max_detections
  # The same detections as the model on the preprocessed image, mapped back to its pixels.
  resized, info = preprocess.resize_and_crop_image(image, model.input_size)
  ref = model.detect(resized[None])
  expected = to_original_frame(np.asarray(ref["detection_boxes"][0, :n]), info.numpy())
  np.testing.assert_allclose(det["detection_boxes"][:n], expected, atol=1e-3)
  np.testing.assert_allclose(det["detection_scores"][:n], np.asarray(ref["detection_scores"][0]),
                             atol=1e-6)
  boxes = det["detection_boxes"][:n]
  assert np.all(boxes[:, [0, 2]] <= 96 + 1e-3) and np.all(boxes[:, [1, 3]] <= 120 + 1e-3)


def test_write_detection_samples_draws_a_png(tmp_path):
  config = _tiny_config(tmp_path)
  model = build_model(config.task.model)
  path = write_detection_samples(model, config.task.validation_data,
                                 str(tmp_path / "det.png"), num_images=4, min_score=0.0)
  with Image.open(path) as f:
    width, height = f.size
  # 3 columns x 2 rows of panels: wider than high.
  assert width > height > 100


def test_write_detection_samples_titles_each_panel_with_its_image(tmp_path, monkeypatch):
  from nasfpn_tf.serving import detection_samples
  config = _tiny_config(tmp_path)
  seen = {}
  monkeypatch.setattr(detection_samples, "draw_detection_grid",
                      lambda images, *args, **kwargs: seen.update(kwargs, n=len(images)))
  detection_samples.write_detection_samples(build_model(config.task.model),
                                            config.task.validation_data,
                                            str(tmp_path / "det.png"), num_images=2)
  assert seen["n"] == 2
  assert seen["titles"] == ["image id 1 (000001.jpg)", "image id 2 (000002.jpg)"]


def test_grid_rejects_mismatched_lists(tmp_path):
  import pytest
  with pytest.raises(ValueError, match="as many detections as images"):
    draw_detection_grid([np.zeros((8, 8, 3))], [], str(tmp_path / "x.png"))
