"""RetinaNet around a `NasFpnSupernet`: one uniformly sampled path per training step.

Single-path uniform sampling (Guo et al., "Single Path One-Shot NAS", 2020): step
n trains the path drawn from the random stream `[seed, n]` (n = the optimizer's
iteration count, which backups restore), every decision uniform over its valid
choices, exactly as random search draws architectures. A resumed run therefore
trains the same paths as an uninterrupted one.

`fit` adds a callback that selects the step's path before each batch; the path
is variables inside the supernet, so the train step stays one traced graph (and
`model.fit` is Keras' own). One step per host call: with `steps_per_execution`
> 1 several steps would share a path, which `fit` refuses.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nasfpn_tf.modeling.decoders.nasfpn_supernet import NasFpnSupernet
from nasfpn_tf.modeling.retinanet_model import (PIXEL_MEAN, PIXEL_STD, RetinaNetModel,
                                                _flatten_levels)
from nasfpn_tf.search.search_space import SearchSpace


class PathSampler(keras.callbacks.Callback):
  """Selects `model.sample_path(step)` before every training step."""

  def on_train_batch_begin(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    self.model.decoder.set_architecture(self.model.sample_path(step))


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class SupernetModel(RetinaNetModel):
  """A `RetinaNetModel` whose decoder is a `NasFpnSupernet`.

  Args:
    path_seed: seeds the path sampled at each training step.
    **kwargs: `RetinaNetModel`'s arguments; `decoder` must be a `NasFpnSupernet`.
  """

  def __init__(self, *args, path_seed: int = 0, **kwargs):
    super().__init__(*args, **kwargs)
    if not isinstance(self.decoder, NasFpnSupernet):
      raise ValueError(f"SupernetModel needs a NasFpnSupernet decoder, got "
                       f"{type(self.decoder).__name__}")
    self.path_seed = int(path_seed)
    d = self.decoder
    self.space = SearchSpace(d.num_cells, d.min_level, d.max_level)
    if d.architecture is None:
      d.set_architecture(self.sample_path(0))
    self._backbone_fn = None

  def sample_path(self, step: int):
    """The path trained at optimizer step `step`."""
    rng = np.random.default_rng([self.path_seed, int(step)])
    return self.space.actions_to_spec(self.space.sample_uniform(rng))

  def fit(self, *args, callbacks=None, **kwargs):
    if getattr(self, "steps_per_execution", 1) not in (1, None):
      raise ValueError("SupernetModel trains one path per step: runtime.steps_per_execution "
                       f"must be 1, got {self.steps_per_execution}")
    # First, so that every other callback sees the step's path already selected.
    return super().fit(*args, callbacks=[PathSampler()] + list(callbacks or []), **kwargs)

  def backbone_features(self, images, training: bool = False) -> dict:
    """Backbone features of a batch in 0..255 pixels (traced once, path-independent)."""
    if self._backbone_fn is None:
      self._backbone_fn = tf.function(lambda x, training: self.backbone(x, training=training))
    x = (ops.cast(images, self.compute_dtype) - ops.array(PIXEL_MEAN, self.compute_dtype)) / \
        ops.array(PIXEL_STD, self.compute_dtype)
    return self._backbone_fn(x, bool(training))

  def head_outputs(self, pyramid: dict, training: bool = False) -> dict:
    """Flattened head outputs of a pyramid (as `call` returns them)."""
    cls, box = self.head(pyramid, training=training)
    return {"cls_outputs": ops.cast(_flatten_levels(cls, self.levels, self.num_classes), "float32"),
            "box_outputs": ops.cast(_flatten_levels(box, self.levels, 4), "float32")}

  def get_config(self) -> dict:
    return {**super().get_config(), "path_seed": self.path_seed}
