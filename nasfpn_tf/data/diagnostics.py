"""Checks that explain "AP 0 on my data" before training starts.

Users fine-tuning on custom data most often lose their run to label ids that do
not fit `num_classes`, images without usable boxes, or boxes no anchor can
match. This scans a sample of the parsed training data and says so, by name.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from nasfpn_tf.configs.experiment import ConfigError, ModelConfig


@dataclasses.dataclass
class DataReport:
  """What a scan of the first few training batches found.

  Attributes:
    images: images scanned (the sample, not the dataset).
    class_ids: target class ids seen in the sample.
    positives_per_image: positive anchors per scanned image.
    images_without_positives: scanned images with no positive anchor.
    batches: batches scanned.
    total_images: images in the dataset (None: the source does not say).
  """
  images: int
  class_ids: list[int]
  positives_per_image: float
  images_without_positives: int
  batches: int = 0
  total_images: Optional[int] = None

  def summary(self) -> str:
    """One line, e.g. "a sample of 64 of 1,500 images (4 batches): class ids [1, 2], ..."."""
    if self.total_images is None:
      sample = f"a sample of {self.images:,} images"
    elif self.images < self.total_images:
      sample = f"a sample of {self.images:,} of {self.total_images:,} images"
    else:  # a small set, repeated (and augmented) to fill the batches
      sample = f"{self.images:,} images drawn from all {self.total_images:,}"
    return (f"{sample} ({self.batches} batches): class ids {self.class_ids}, "
            f"{self.positives_per_image:.1f} positive anchors per image, "
            f"{self.images_without_positives} of them with no positive anchor")


def inspect_training_data(dataset: tf.data.Dataset, model: ModelConfig, max_batches: int = 4,
                          total_images: Optional[int] = None) -> DataReport:
  """Scans a few batches of (images, {"cls_targets", ...}) from the training pipeline.

  `total_images` (the source's image count, when it knows it) only goes into the report,
  so that it says how much of the data the sample is.

  Raises ConfigError when a target class id does not fit `num_classes`; logs a
  warning when images carry no positive anchor (their boxes match no anchor:
  objects far smaller than the smallest anchor, or lost by resizing).
  """
  ids, images, positives, empty, batches = set(), 0, 0, 0, 0
  for _, labels in dataset.take(max_batches):
    batches += 1
    cls = labels["cls_targets"].numpy()
    pos = cls >= 0
    ids.update(np.unique(cls[pos]).tolist())
    images += cls.shape[0]
    positives += int(pos.sum())
    empty += int((pos.sum(axis=1) == 0).sum())
  report = DataReport(images, sorted(int(i) for i in ids), positives / max(images, 1), empty,
                      batches, total_images)
  too_big = [i for i in report.class_ids if i >= model.num_classes]
  if too_big:
    raise ConfigError("task.model.num_classes",
                      f"{model.num_classes} but training targets contain class ids {too_big}; "
                      "num_classes must be the largest category id + 1")
  if images and positives == 0:
    logging.warning("No positive anchor in %d training images: no box matches any anchor. "
                    "Check box coordinates and task.model.anchor / input_size.", images)
  elif empty > images // 2:
    logging.warning("%d of %d training images have no positive anchor (boxes too small for "
                    "the anchors, or images without objects).", empty, images)
  logging.info("Training data: %s", report.summary())
  return report
