"""Centre/size box encoding relative to anchors (Faster R-CNN style).

Delegates the arithmetic to `keras.utils.bounding_boxes`; what this file adds is
the weights convention of Model Garden (deltas multiplied by `weights`, default
1 — the Huber delta of 0.1 is tuned for unscaled deltas) and a clip on the
size deltas so `exp` cannot overflow on a bad prediction.
"""

from __future__ import annotations

import math
from typing import Sequence

from keras import ops
from keras.utils import bounding_boxes

# exp(clip) caps a decoded box at 1000/16 times its anchor, as Detectron and Model Garden do.
SIZE_DELTA_CLIP = math.log(1000.0 / 16)


def _variance(weights: Sequence[float] | None):
  if weights is None or all(w == 1.0 for w in weights):
    return None
  return [1.0 / w for w in weights]


def encode(boxes, anchors, weights: Sequence[float] | None = None):
  """(ymin, xmin, ymax, xmax) boxes -> (dy, dx, dh, dw) deltas w.r.t. anchors (same shapes)."""
  return bounding_boxes.encode_box_to_deltas(
      anchors, boxes, anchor_format="yxyx", box_format="yxyx",
      encoding_format="center_yxhw", variance=_variance(weights))


def decode(deltas, anchors, weights: Sequence[float] | None = None):
  """Inverse of `encode`; size deltas are clipped to `SIZE_DELTA_CLIP` first."""
  deltas = ops.concatenate(
      [deltas[..., :2], ops.minimum(deltas[..., 2:], _scaled_clip(weights))], axis=-1)
  return bounding_boxes.decode_deltas_to_boxes(
      anchors, deltas, anchor_format="yxyx", box_format="yxyx",
      encoded_format="center_yxhw", variance=_variance(weights))


def _scaled_clip(weights: Sequence[float] | None) -> float:
  # The clip applies to the unweighted log-size; deltas carry the weight.
  return SIZE_DELTA_CLIP * (min(weights[2:]) if weights else 1.0)
