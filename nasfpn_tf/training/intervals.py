"""The optimizer step, and a Keras callback base that fires every N optimizer steps.

Every callback of the trainer counts in optimizer steps (`model.optimizer.iterations`), which
a backup restores, rather than in Keras' batch counter, which restarts in every `fit` call.
"""

from __future__ import annotations

import keras


def optimizer_step(model: keras.Model) -> int:
  return int(model.optimizer.iterations.numpy())


def crossed(previous: int, current: int, interval: int) -> bool:
  """Whether a multiple of `interval` lies in (previous, current]: with several steps per
  execution, callbacks see every k-th step only."""
  return current // interval > previous // interval


class EveryNSteps(keras.callbacks.Callback):
  """Calls `self._on_interval(step, logs)` whenever the optimizer step crosses a multiple of
  `self.interval` (steps_per_execution may jump over the multiple itself)."""

  interval: int

  def on_train_begin(self, logs=None):
    self._last_step = optimizer_step(self.model)

  def on_train_batch_end(self, batch, logs=None):
    step = optimizer_step(self.model)
    if crossed(self._last_step, step, self.interval):
      self._on_interval(step, logs)
    self._last_step = step

  def _on_interval(self, step: int, logs=None) -> None:
    raise NotImplementedError
