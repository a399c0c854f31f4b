"""The RNN controller that samples NAS-FPN architectures (NASNet-style).

One LSTM step per decision of the `SearchSpace`. Step t is fed the embedding of
decision t-1 (a learned start token at t=0); a softmax head per decision kind
("input", "level", "op") reads the LSTM output; choices that are invalid given
the earlier decisions get a logit of -1e9, so they have probability exactly 0.

Sampling takes its randomness from one uniform number per (architecture, step),
drawn from `numpy.random.default_rng([seed, i])` for the i-th architecture; the
same seed and weights give the same architectures whatever the batch size.

Example:
  controller = Controller(num_cells=7, min_level=3, max_level=7, units=100, seed=0)
  specs, actions, log_probs = controller.sample(20, seed=1)
  new_log_probs, entropy = controller.log_probs_and_entropy(actions)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nasfpn_tf import file_io
from nasfpn_tf.architecture_spec import ArchitectureSpec
from nasfpn_tf.search.search_space import DECISION_KINDS, SearchSpace

_MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class Controller(keras.Model):
  """An LSTM policy over the decisions of a `SearchSpace`.

  Args:
    num_cells: merging cells per pyramid.
    min_level: finest level of the searched pyramid.
    max_level: coarsest level.
    units: LSTM units (the embedding has the same width).
    init_range: weights start uniform in [-init_range, init_range], so the first
      policy is close to uniform over the valid choices.
    tanh_constant: if set, logits become `tanh_constant * tanh(logits)`, which
      bounds how peaked the policy can get (keeps some exploration).
    temperature: logits are divided by it before the tanh.
    seed: seed of the weight initialisers.

  Call arguments:
    actions: int32 [batch, num_steps] action sequences.

  Returns:
    `(log_probs, entropy)`, both float32 [batch]: the sequence log-probability
    of `actions` and the summed per-step entropy under the current weights.
  """

  def __init__(self, num_cells: int = 7, min_level: int = 3, max_level: int = 7,
               units: int = 100, init_range: float = 0.1,
               tanh_constant: Optional[float] = None, temperature: float = 1.0,
               seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    if units < 1:
      raise ValueError(f"units must be >= 1, got {units}")
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    self.space = SearchSpace(num_cells, min_level, max_level)
    self.num_cells, self.min_level, self.max_level = num_cells, min_level, max_level
    self.units = units
    self.init_range = init_range
    self.tanh_constant = tanh_constant
    self.temperature = temperature
    self.seed = seed
    self._init_tables()
    init = lambda i: keras.initializers.RandomUniform(-init_range, init_range, seed=seed * 97 + i)
    self.embedding = keras.layers.Embedding(self._vocab_size, units, embeddings_initializer=init(0),
                                            name="decision_embedding")
    self.cell = keras.layers.LSTMCell(units, kernel_initializer=init(1),
                                      recurrent_initializer=init(2), name="lstm_cell")
    self.heads = {kind: keras.layers.Dense(size, kernel_initializer=init(3 + i),
                                           name=f"{kind}_head")
                  for i, (kind, size) in enumerate(self.space.kind_sizes().items())}

  def _init_tables(self) -> None:
    """Per-step constants: kind, token offset, static mask (padded to the widest head)."""
    sizes = self.space.kind_sizes()
    offsets, total = {}, 0
    for kind in DECISION_KINDS:
      offsets[kind] = total
      total += sizes[kind]
    self._start_token = total
    self._vocab_size = total + 1
    self._max_choices = max(sizes.values())
    steps = range(self.space.num_steps)
    kinds = self.space.step_kinds()
    self._step_kind_ids = np.array([DECISION_KINDS.index(k) for k in kinds], np.int32)
    self._step_offsets = np.array([offsets[k] for k in kinds], np.int32)
    masks = np.zeros((self.space.num_steps, self._max_choices), bool)
    for t in steps:
      m = self.space.static_mask(t)
      masks[t, :m.size] = m
    self._step_masks = masks
    self._step_is_output_level = np.array([self.space.is_output_level_step(t) for t in steps])

  def build(self, input_shape=None):
    self.embedding.build((None,))
    self.cell.build((None, self.units))
    for head in self.heads.values():
      head.build((None, self.units))
    self.built = True

  def _ensure_built(self) -> None:
    if not self.built:
      self.build()

  @property
  def num_steps(self) -> int:
    return self.space.num_steps

  def _step_logits(self, t, prev_token, states, used_levels):
    """LSTM step `t` (a scalar tensor): masked logits [B, max_choices], states, mask.

    All heads are evaluated and the step's kind picked by index, so one loop
    body serves every step: a `tf.while_loop` traces in a fraction of the time
    an unrolled 28-step graph (and its gradient) takes.
    """
    x = self.embedding(prev_token)
    h, states = self.cell(x, states)
    padded = [tf.pad(self.heads[kind](h), [[0, 0], [0, self._max_choices - size]])
              for kind, size in self.space.kind_sizes().items()]
    logits = tf.gather(tf.stack(padded), tf.gather(self._step_kind_ids, t)) / self.temperature
    if self.tanh_constant is not None:
      logits = self.tanh_constant * tf.tanh(logits)
    mask = tf.broadcast_to(tf.gather(tf.constant(self._step_masks), t), tf.shape(logits))
    free_levels = tf.pad(tf.logical_not(used_levels),
                         [[0, 0], [0, self._max_choices - self.space.num_levels]])
    mask = tf.where(tf.gather(self._step_is_output_level, t),
                    tf.logical_and(mask, free_levels), mask)
    return tf.where(mask, logits, _MASKED_LOGIT), states, mask

  def _after_step(self, t, used, actions_t):
    """Marks an output cell's level as used; returns (used, next step's input token)."""
    newly = tf.cast(tf.one_hot(actions_t, self.space.num_levels), tf.bool)
    used = tf.where(tf.gather(self._step_is_output_level, t), tf.logical_or(used, newly), used)
    return used, actions_t + tf.gather(self._step_offsets, t)

  def _initial(self, batch_size):
    zeros = tf.zeros([batch_size, self.units])
    prev = tf.fill([batch_size], self._start_token)
    used = tf.zeros([batch_size, self.space.num_levels], tf.bool)
    return zeros, zeros, prev, used

  def score(self, actions):
    """Teacher-forced pass: sequence log-probs and entropies, both [B].

    Plain (not a tf.function), for use inside a caller's tf.function: the
    gradient of a nested tf.function takes TensorFlow much longer to build.
    """
    self._ensure_built()
    batch_size = tf.shape(actions)[0]
    h, c, prev, used = self._initial(batch_size)

    def body(t, h, c, prev, used, log_prob, entropy):
      logits, (h, c), mask = self._step_logits(t, prev, [h, c], used)
      logp = tf.nn.log_softmax(logits)
      a_t = tf.gather(actions, t, axis=1)
      log_prob += tf.gather(logp, a_t, batch_dims=1)
      # Masked entries have p == 0 exactly; where() keeps 0 * -1e9 out of the sum.
      entropy -= tf.reduce_sum(tf.where(mask, tf.exp(logp) * logp, 0.0), axis=-1)
      used, prev = self._after_step(t, used, a_t)
      return t + 1, h, c, prev, used, log_prob, entropy

    zeros = tf.zeros([batch_size])
    out = tf.while_loop(lambda t, *_: t < self.num_steps, body,
                        (tf.constant(0), h, c, prev, used, zeros, zeros))
    return out[5], out[6]

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.float32)])
  def _sample_from_uniforms(self, uniforms):
    """Inverse-CDF sampling, one uniform per (row, step); returns actions, log-probs."""
    batch_size = tf.shape(uniforms)[0]
    h, c, prev, used = self._initial(batch_size)

    def body(t, h, c, prev, used, log_prob, actions):
      logits, (h, c), mask = self._step_logits(t, prev, [h, c], used)
      logp = tf.nn.log_softmax(logits)
      cdf = tf.cumsum(tf.exp(logp), axis=-1)
      threshold = tf.gather(uniforms, [t], axis=1) * cdf[:, -1:]
      # The first valid choice whose CDF reaches u; the last valid one always does,
      # because masked entries after it add exactly 0.
      hits = tf.logical_and(cdf >= threshold, mask)
      a_t = tf.cast(tf.argmax(tf.cast(hits, tf.int32), axis=-1), tf.int32)
      log_prob += tf.gather(logp, a_t, batch_dims=1)
      used, prev = self._after_step(t, used, a_t)
      return t + 1, h, c, prev, used, log_prob, actions.write(t, a_t)

    actions = tf.TensorArray(tf.int32, size=self.num_steps)
    out = tf.while_loop(lambda t, *_: t < self.num_steps, body,
                        (tf.constant(0), h, c, prev, used, tf.zeros([batch_size]), actions))
    return tf.transpose(out[6].stack()), out[5]

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32)])
  def _score_graph(self, actions):
    return self.score(actions)

  def call(self, actions):
    self._ensure_built()
    return self._score_graph(tf.cast(actions, tf.int32))

  def log_probs_and_entropy(self, actions) -> tuple[tf.Tensor, tf.Tensor]:
    """Sequence log-probabilities and entropies of `actions` under the current weights.

    Differentiable (call it under a `tf.GradientTape` for PPO).

    Args:
      actions: int [batch, num_steps] action sequences.

    Returns:
      `(log_probs, entropy)`, float32 tensors of shape [batch].
    """
    return self(tf.convert_to_tensor(np.asarray(actions), tf.int32))

  def sample_actions(self, seeds: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Samples one action sequence per seed (each seed a list of ints for numpy).

    Returns:
      `(actions, log_probs)`: int32 [n, num_steps] and float32 [n].
    """
    self._ensure_built()
    uniforms = np.stack([np.random.default_rng(list(s)).random(self.num_steps)
                         for s in seeds]).astype(np.float32)
    actions, log_probs = self._sample_from_uniforms(tf.constant(uniforms))
    return actions.numpy(), log_probs.numpy()

  def sample(self, num: int, seed: int = 0
             ) -> tuple[list[ArchitectureSpec], np.ndarray, np.ndarray]:
    """Samples `num` architectures.

    Args:
      num: how many.
      seed: the i-th architecture uses the random stream `[seed, i]`.

    Returns:
      `(specs, actions, log_probs)`: the specs, int32 [num, num_steps] actions and
      float32 [num] log-probabilities under the weights at sampling time.
    """
    actions, log_probs = self.sample_actions([[seed, i] for i in range(num)])
    specs = [self.space.actions_to_spec(a) for a in actions]
    return specs, actions, log_probs

  def get_state(self) -> list[np.ndarray]:
    self._ensure_built()
    return [np.array(w) for w in self.get_weights()]

  def set_state(self, weights: Sequence[np.ndarray]) -> None:
    self._ensure_built()
    self.set_weights(list(weights))

  def save_weights_atomic(self, path: str) -> None:
    """Writes `path` (a `.weights.h5` file) via a temp file and a rename."""
    self._ensure_built()
    if not path.endswith(".weights.h5"):
      raise ValueError(f"controller weights path must end in .weights.h5, got {path}")
    file_io.atomic_save(self.save_weights, path)

  def load_weights_file(self, path: str) -> None:
    self._ensure_built()
    self.load_weights(path)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update({"num_cells": self.num_cells, "min_level": self.min_level,
                   "max_level": self.max_level, "units": self.units,
                   "init_range": self.init_range, "tanh_constant": self.tanh_constant,
                   "temperature": self.temperature, "seed": self.seed})
    return config
