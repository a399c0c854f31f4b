"""COCO box AP with pycocotools (the callback that runs it during training is
nasfpn_tf/training/coco_eval.py)."""

from __future__ import annotations

import contextlib
import io
from typing import Iterable, Optional

import keras
import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from nasfpn_tf import file_io

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_original_frame(boxes: np.ndarray, image_info: np.ndarray) -> np.ndarray:
  """Model-input (ymin, xmin, ymax, xmax) -> original-image pixels, via image_info."""
  scale, offset = image_info[2], image_info[3]
  boxes = (boxes + np.concatenate([offset, offset])) / np.concatenate([scale, scale])
  height, width = image_info[0]
  return np.clip(boxes, 0, [height, width, height, width])


def detections_to_coco(detections: dict, image_ids: np.ndarray,
                       image_infos: np.ndarray) -> list[dict]:
  """A batch of model detections -> COCO result records (xywh, dataset category ids)."""
  records = []
  for b, image_id in enumerate(image_ids):
    n = int(detections["num_detections"][b])
    boxes = to_original_frame(detections["detection_boxes"][b, :n], image_infos[b])
    for box, score, cls in zip(boxes, detections["detection_scores"][b, :n],
                               detections["detection_classes"][b, :n]):
      ymin, xmin, ymax, xmax = (float(v) for v in box)
      records.append({"image_id": int(image_id), "category_id": int(cls),
                      "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "score": float(score)})
  return records


def coco_gt_from_examples(examples: Iterable[dict], category_names: dict[int, str]) -> COCO:
  """Builds COCO ground truth from raw examples (for sources without a json, e.g. TFDS).

  Areas are box areas (COCO json areas are mask areas), so APs/APm/APl can differ
  slightly from the official numbers.
  """
  images, annotations = [], []
  for ex in examples:
    image_id = int(ex["image_id"])
    h, w = ex["image"].shape[:2]
    images.append({"id": image_id, "height": int(h), "width": int(w)})
    for box, cls in zip(ex["boxes"], ex["classes"]):
      ymin, xmin, ymax, xmax = (float(v) for v in box)
      annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                          "category_id": int(cls), "iscrowd": 0,
                          "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                          "area": (xmax - xmin) * (ymax - ymin)})
  coco = COCO()
  coco.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i, "name": n} for i, n in category_names.items()]}
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def load_coco_gt(annotation_file: str) -> COCO:
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(annotation_file)


def coco_metrics(coco_gt: COCO, results: list[dict], image_ids: Optional[list[int]] = None,
                 verbose: bool = False) -> dict[str, float]:
  """Runs COCOeval (bbox) and returns the six standard AP numbers (0 when nothing detected)."""
  if not results:
    return {name: 0.0 for name in METRIC_NAMES}
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if image_ids is not None:
      evaluator.params.imgIds = sorted(set(image_ids))
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  if verbose:
    print(out.getvalue())
  return {name: float(max(evaluator.stats[i], 0.0)) for i, name in enumerate(METRIC_NAMES)}


def evaluate_detections(model: keras.Model, dataset: tf.data.Dataset, coco_gt: COCO,
                        max_steps: int = -1) -> dict[str, float]:
  """Runs `model.detect` over an evaluation dataset of (images, labels) and scores it."""
  results, seen = [], []
  detect = tf.function(model.detect, reduce_retracing=True)
  for step, (images, labels) in enumerate(dataset):
    if 0 <= max_steps <= step:
      break
    detections = {k: v.numpy() for k, v in detect(images).items()}
    ids = labels["image_id"].numpy()
    results += detections_to_coco(detections, ids, labels["image_info"].numpy())
    seen += [int(i) for i in ids]
  return coco_metrics(coco_gt, results, seen)


def write_json_atomic(data: dict, path: str) -> None:
  file_io.write_json(path, data)


def format_table(metrics: dict[str, float]) -> str:
  head = " | ".join(f"{n:>6}" for n in METRIC_NAMES)
  row = " | ".join(f"{metrics[n]:6.3f}" for n in METRIC_NAMES)
  return f"{head}\n{row}"
