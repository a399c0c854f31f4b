"""RetinaNet around a `NasFpnSupernet`: one uniformly sampled path per training step.

Single-path uniform sampling (Guo et al., "Single Path One-Shot NAS", 2020): step
n trains the path drawn from the random stream `[seed, n]` (n = the optimizer's
iteration count, which backups restore), every decision uniform over its valid
choices, exactly as random search draws architectures. A resumed run therefore
trains the same paths as an uninterrupted one.

Why a custom `train_step`, run eagerly: the path changes every step, and a
traced graph per path would retrace on almost every step. Only the decoder's
few cells run eagerly; the backbone, the head, the loss and the optimizer
update are `tf.function`s traced once. Eager execution of the whole model was
2.8x slower per step than the graph on this 2-core CPU (proxy model, 256 px,
batch 16, 10 steps, load average ~5 from other jobs); see `_compiled`.
The supernet trains on one device: there is no distribution strategy here.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nasfpn_tf.modeling.decoders.nasfpn_supernet import NasFpnSupernet
from nasfpn_tf.modeling.retinanet_model import (PIXEL_MEAN, PIXEL_STD, RetinaNetModel,
                                                _flatten_levels)
from nasfpn_tf.search.search_space import SearchSpace


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
    self._fns: dict[str, Any] = {}

  def sample_path(self, step: int):
    """The path trained at optimizer step `step`."""
    rng = np.random.default_rng([self.path_seed, int(step)])
    return self.space.actions_to_spec(self.space.sample_uniform(rng))

  def compile(self, *args, **kwargs):
    # The path is Python state that changes every step: the step itself must run eagerly.
    kwargs["run_eagerly"] = True
    kwargs.pop("jit_compile", None)
    super().compile(*args, jit_compile=False, **kwargs)

  def _compiled(self, name: str):
    """The traced-once pieces around the decoder."""
    if not self._fns:
      self._fns = {
          "backbone": tf.function(lambda x, training: self.backbone(x, training=training)),
          "head": tf.function(lambda f, training: self.head(f, training=training)),
          "apply": tf.function(lambda grads: self.optimizer.apply_gradients(
              zip(grads, self.trainable_variables))),
      }
    return self._fns[name]

  def backbone_features(self, images, training: bool = False) -> dict:
    x = (ops.cast(images, self.compute_dtype) - ops.array(PIXEL_MEAN, self.compute_dtype)) / \
        ops.array(PIXEL_STD, self.compute_dtype)
    return self._compiled("backbone")(x, bool(training))

  def head_outputs(self, pyramid: dict, training: bool = False, compiled: bool = True) -> dict:
    """Flattened head outputs; `compiled=False` runs the head eagerly (batch-norm
    recalibration changes the momentum between calls, which a trace would freeze)."""
    head = self._compiled("head") if compiled else (
        lambda f, training: self.head(f, training=training))
    cls, box = head(pyramid, bool(training))
    return {"cls_outputs": ops.cast(_flatten_levels(cls, self.levels, self.num_classes), "float32"),
            "box_outputs": ops.cast(_flatten_levels(box, self.levels, 4), "float32")}

  def call(self, images, training=None):
    if not self._fns and not tf.executing_eagerly():
      return super().call(images, training=training)   # symbolic build
    features = self.backbone_features(images, bool(training))
    return self.head_outputs(self.decoder(features, training=training), bool(training))

  def train_step(self, data):
    images, labels = data
    self.decoder.set_architecture(self.sample_path(int(self.optimizer.iterations.numpy())))
    with tf.GradientTape() as tape:
      y_pred = self(images, training=True)
      loss = self.compute_loss(y=labels, y_pred=y_pred)
    self._loss_tracker.update_state(loss, sample_weight=tf.shape(images)[0])
    variables = self.trainable_variables
    grads = tape.gradient(loss, variables)
    # Slots off this step's path get zero gradients, so the update keeps one trace.
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    self._compiled("apply")(grads)
    return self.compute_metrics(images, labels, y_pred)

  def get_config(self) -> dict:
    return {**super().get_config(), "path_seed": self.path_seed}
