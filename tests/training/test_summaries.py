"""TensorBoard: every scalar, per-step or per-evaluation, is logged against the optimizer step."""

import glob
import os

import keras
import numpy as np
import tensorflow as tf

from nasfpn_tf.training.summaries import StepSummaries


class _FakeEval(keras.callbacks.Callback):
  """Adds val_AP to the epoch-end logs, as the COCO evaluation callback does."""

  def on_epoch_end(self, epoch, logs=None):
    logs["val_AP"] = 0.1 * (epoch + 1)


def _scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        out.setdefault(value.tag, []).append(
            (event.step, float(tf.make_ndarray(value.tensor))))
  return out


def test_scalars_share_the_global_step_axis_across_fit_calls(tmp_path):
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
  x, y = np.ones((12, 2), np.float32), np.zeros((12, 1), np.float32)
  summaries = StepSummaries(str(tmp_path), interval=2)
  callbacks = [_FakeEval(), summaries]
  # Two fit calls, as after a resume: epochs of 3 steps, epoch numbers 0 then 1.
  model.fit(x, y, batch_size=4, epochs=1, callbacks=callbacks, verbose=0)
  model.fit(x, y, batch_size=4, initial_epoch=1, epochs=2, callbacks=callbacks, verbose=0)
  train = _scalars(str(tmp_path / "train"))
  validation = _scalars(str(tmp_path / "validation"))
  # Every 2 steps, plus the end of each epoch (3, 6); never the epoch numbers 0, 1.
  assert [step for step, _ in train["loss"]] == [2, 3, 4, 6]
  assert [step for step, _ in train["learning_rate"]] == [2, 3, 4, 6]
  assert np.allclose([v for _, v in train["learning_rate"]], 0.01)
  assert [(step, round(v, 6)) for step, v in validation["AP"]] == [(3, 0.1), (6, 0.2)]
  assert "val_AP" not in train and "loss" not in validation
