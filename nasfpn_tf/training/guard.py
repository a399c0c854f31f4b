"""NonFiniteLossGuard: stops training at the first NaN/inf loss, before anything is saved."""

from __future__ import annotations

import math
from typing import Optional

import keras
import numpy as np
from absl import logging

from nasfpn_tf.training.intervals import optimizer_step


class NonFiniteLossGuard(keras.callbacks.Callback):
  """Stops training at the first NaN/inf loss and remembers where, so that the callbacks after
  it (checkpoint, backup, evaluation) can refuse to save the broken weights.

  Keras' TerminateOnNaN stops as well, but `on_train_end` callbacks would still run on the
  diverged weights and overwrite the last good checkpoint. Put this callback first.

  A step's loss is computed before its update, so the update of the last step with a finite
  loss can itself leave non-finite weights: the savers call `weights_ok` before writing, on
  every worker (the weights are the same everywhere, so all workers stop at the same step).
  """

  def __init__(self):
    super().__init__()
    self.bad_step: Optional[int] = None
    self.bad_loss: Optional[float] = None
    self.reason = ""

  @property
  def healthy(self) -> bool:
    return self.bad_step is None

  def _stop(self, step: int, loss: float, reason: str) -> None:
    self.bad_step, self.bad_loss, self.reason = step, loss, reason
    logging.error("%s at step %d: stopping, nothing is saved from here", reason, step)
    self.model.stop_training = True

  @staticmethod
  def weights_finite(model: keras.Model) -> bool:
    return all(np.isfinite(np.asarray(w)).all() for w in model.weights)

  def weights_ok(self, model: keras.Model) -> bool:
    """Whether training is healthy and `model`'s weights are all finite (else it stops)."""
    if self.healthy and not self.weights_finite(model):
      self.set_model(model)
      self._stop(optimizer_step(model), float("nan"), "the weights became non-finite")
    return self.healthy

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is None or not self.healthy:
      return
    loss = float(loss)
    if not math.isfinite(loss):
      self._stop(optimizer_step(self.model), loss, f"loss {loss}")
