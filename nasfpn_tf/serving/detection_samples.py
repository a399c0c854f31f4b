"""A PNG of a trained model's detections on a few validation images, next to the truth.

The model runs through the serving path (`DetectionModule.serve_images`: any image size in,
boxes in the image's own pixels out), so the picture shows what an export would detect.

AP says how good a detector is; a picture says what it gets wrong (missed small
objects, duplicate boxes, confused classes). run.py writes MODEL_DIR/detections.png
after training.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from nasfpn_tf.configs.experiment import DataConfig
from nasfpn_tf.data.coco_reader import load_coco_index
from nasfpn_tf.data.input_pipeline import coco_paths
from nasfpn_tf.serving.detection_module import DetectionModule
from nasfpn_tf.visualize import draw_detection_grid


def predict_image(module, image: np.ndarray) -> dict[str, np.ndarray]:
  """Detections of one uint8 [H, W, 3] image, boxes in its own pixels (the serving path)."""
  out = module.serve_images(image[None])
  return {k: np.asarray(v)[0] for k, v in out.items()}


def write_detection_samples(model, data: DataConfig, path: str, num_images: int = 6,
                            min_score: float = 0.3) -> str:
  """Runs `model` on the first `num_images` images of a json-backed split and draws them.

  Args:
    model: a trained RetinaNetModel.
    data: the split's data config (embedded or COCO json + image folder).
    path: the PNG to write (atomically).
    num_images: how many images, in the json's order.
    min_score: detections below this score are not drawn.

  Returns:
    `path`.
  """
  annotation_file, image_dir = coco_paths(data)
  if not annotation_file:
    raise ValueError(f"data.source '{data.source}' has no json + image folder to draw from")
  records, info = load_coco_index(annotation_file, image_dir)
  module = DetectionModule(model)
  images, detections, truths, titles = [], [], [], []
  for record in records[:num_images]:
    with Image.open(record.path) as f:
      image = np.asarray(f.convert("RGB"))
    images.append(image)
    detections.append(predict_image(module, image))
    truths.append(record.boxes)
    titles.append(f"image id {record.image_id} ({os.path.basename(record.path)})")
  return draw_detection_grid(images, detections, path, info.category_names, min_score, truths,
                             titles=titles)
