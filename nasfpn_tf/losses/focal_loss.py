"""Sigmoid focal loss (Lin et al., 2017), summed over anchors and classes."""

from __future__ import annotations

from keras import ops


def sigmoid_focal_loss(labels, logits, alpha: float = 0.25, gamma: float = 1.5):
  """Element-wise focal loss.

  Args:
    labels: one-hot (or multi-hot) float targets, same shape as `logits`.
    logits: raw class scores.
    alpha: weight of the positive term (1 - alpha for negatives).
    gamma: focusing exponent; 0 gives alpha-weighted cross-entropy.

  Returns:
    The per-element loss, same shape as `logits` (no reduction).
  """
  labels = ops.cast(labels, logits.dtype)
  # Stable log-loss from logits: max(x, 0) - x*z + log(1 + exp(-|x|)).
  ce = ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
  prob = ops.sigmoid(logits)
  p_t = labels * prob + (1.0 - labels) * (1.0 - prob)
  alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)
  return alpha_t * ops.power(1.0 - p_t, gamma) * ce
