"""Multi-level anchor boxes (RetinaNet / Model Garden defaults).

Anchors are plain constants of the input size, computed once in numpy. Their
order is level-major, then row (y), column (x), then anchor (scale-major, then
aspect ratio); the head's outputs are flattened in exactly this order.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from nasfpn_tf.levels import level_key


def feature_size(image_size: Sequence[int], level: int) -> tuple[int, int]:
  """Spatial size of level `level` for an input of `image_size` ('same' padding strides)."""
  stride = 2 ** level
  return math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)


def anchor_shapes(level: int, num_scales: int, aspect_ratios: Sequence[float],
                  anchor_size: float) -> np.ndarray:
  """(height, width) of the anchors at one location, scale-major; aspect ratio = width / height."""
  shapes = []
  for scale in range(num_scales):
    base = anchor_size * (2 ** level) * 2 ** (scale / num_scales)
    for ratio in aspect_ratios:
      shapes.append((base / math.sqrt(ratio), base * math.sqrt(ratio)))
  return np.asarray(shapes, np.float32)


def level_anchors(image_size: Sequence[int], level: int, num_scales: int = 3,
                  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                  anchor_size: float = 4.0) -> np.ndarray:
  """Anchors of one level, [H * W * A, 4] as (ymin, xmin, ymax, xmax) in pixels."""
  stride = 2 ** level
  height, width = feature_size(image_size, level)
  cy = (np.arange(height, dtype=np.float32) + 0.5) * stride
  cx = (np.arange(width, dtype=np.float32) + 0.5) * stride
  shapes = anchor_shapes(level, num_scales, aspect_ratios, anchor_size)  # [A, 2]
  cy = cy[:, None, None]
  cx = cx[None, :, None]
  half_h, half_w = shapes[None, None, :, 0] / 2, shapes[None, None, :, 1] / 2
  boxes = np.stack(np.broadcast_arrays(cy - half_h, cx - half_w, cy + half_h, cx + half_w), -1)
  return boxes.reshape(-1, 4).astype(np.float32)


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class AnchorGenerator:
  """Builds the anchors of levels `min_level..max_level` for an image size.

  Args:
    min_level, max_level: pyramid levels (stride 2**level).
    num_scales: scales per octave (2**(i / num_scales)).
    aspect_ratios: width / height of the anchors.
    anchor_size: anchor side, in strides, at scale 1 and ratio 1.

  Example:
    anchors = AnchorGenerator(3, 7)((256, 256))   # {"P3": [32*32*9, 4], ...}
  """

  def __init__(self, min_level: int = 3, max_level: int = 7, num_scales: int = 3,
               aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), anchor_size: float = 4.0):
    if min_level > max_level:
      raise ValueError(f"min_level {min_level} > max_level {max_level}")
    self.min_level, self.max_level = min_level, max_level
    self.num_scales = num_scales
    self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
    self.anchor_size = float(anchor_size)

  @property
  def anchors_per_location(self) -> int:
    return self.num_scales * len(self.aspect_ratios)

  def __call__(self, image_size: Sequence[int]) -> dict[str, np.ndarray]:
    return {level_key(l): level_anchors(image_size, l, self.num_scales, self.aspect_ratios,
                                        self.anchor_size)
            for l in range(self.min_level, self.max_level + 1)}

  def flat(self, image_size: Sequence[int]) -> np.ndarray:
    """All levels concatenated, [N, 4]."""
    return np.concatenate(list(self(image_size).values()), axis=0)

  def get_config(self) -> dict:
    return {"min_level": self.min_level, "max_level": self.max_level,
            "num_scales": self.num_scales, "aspect_ratios": list(self.aspect_ratios),
            "anchor_size": self.anchor_size}

  @classmethod
  def from_config(cls, config: dict) -> "AnchorGenerator":
    return cls(**config)
