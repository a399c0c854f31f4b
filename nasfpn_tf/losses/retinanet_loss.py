"""The RetinaNet training loss: focal classification + Huber box regression.

Both terms are summed over anchors and divided by the number of positive
anchors + 1 (Model Garden); the +1 keeps an image without objects finite.
"""

from __future__ import annotations

from typing import Mapping

import keras
from keras import ops

from nasfpn_tf.losses.focal_loss import sigmoid_focal_loss


def retinanet_losses(targets: Mapping, cls_outputs, box_outputs, num_classes: int,
                     focal_alpha: float = 0.25, focal_gamma: float = 1.5,
                     huber_delta: float = 0.1, box_loss_weight: float = 50.0) -> dict:
  """Computes the loss terms for a batch.

  Args:
    targets: {"cls_targets": int [B, N] (id >= 0 positive, -1 background, -2 ignored),
      "box_targets": float [B, N, 4]}.
    cls_outputs: float [B, N, num_classes] logits.
    box_outputs: float [B, N, 4] box deltas.

  Returns:
    {"total_loss", "cls_loss", "box_loss", "num_positives"} scalars (float32).
  """
  cls_targets = ops.cast(targets["cls_targets"], "int32")
  cls_outputs = ops.cast(cls_outputs, "float32")
  box_outputs = ops.cast(box_outputs, "float32")
  positive = ops.cast(cls_targets >= 0, "float32")
  not_ignored = ops.cast(cls_targets != -2, "float32")
  num_positives = ops.sum(positive) + 1.0

  one_hot = ops.one_hot(ops.maximum(cls_targets, 0), num_classes) * positive[..., None]
  cls_loss = ops.sum(sigmoid_focal_loss(one_hot, cls_outputs, focal_alpha, focal_gamma)
                     * not_ignored[..., None]) / num_positives

  huber = keras.losses.Huber(delta=huber_delta, reduction=None)
  per_anchor = huber(ops.cast(targets["box_targets"], "float32"), box_outputs)  # mean over 4
  box_loss = ops.sum(per_anchor * positive) / num_positives

  return {"total_loss": cls_loss + box_loss_weight * box_loss, "cls_loss": cls_loss,
          "box_loss": box_loss, "num_positives": num_positives - 1.0}
