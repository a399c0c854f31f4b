"""Proximal Policy Optimization of the controller (Schulman et al. 2017).

Each trial is one episode whose action is a whole architecture, so the
importance ratio is taken over the sequence: r = exp(log pi(a) - log pi_old(a)),
with log pi_old stored when the architecture was sampled. The loss minimised is

  -mean_i min(r_i A_i, clip(r_i, 1 - eps, 1 + eps) A_i) - c_H mean_i H_i

with A_i = reward_i - b, b an exponential moving average of the rewards seen so
far (taken before this batch updates it), and H_i the summed per-step entropy.
With `normalize_advantages` (the default) the A_i are then standardised over the
batch, which makes b cancel out, and c_H decays linearly from `entropy_coef` to
`entropy_coef_final` over the first `entropy_decay_updates` updates: a wide
policy early, a sharp one late (measured in `nasfpn_tf.configs.search_config`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nasfpn_tf.configs.search_config import PPOConfig
from nasfpn_tf.search.controller import Controller


def clipped_surrogate_loss(new_log_probs: tf.Tensor, old_log_probs: tf.Tensor,
                           advantages: tf.Tensor, entropy: tf.Tensor, clip_ratio: float,
                           entropy_coef: float) -> tf.Tensor:
  """PPO's clipped surrogate loss with an entropy bonus (a scalar to minimise).

  Args:
    new_log_probs: [B] sequence log-probabilities under the current weights.
    old_log_probs: [B] the same at sampling time (constants).
    advantages: [B] reward minus baseline (constants).
    entropy: [B] policy entropy along each sequence.
    clip_ratio: epsilon of the clipping.
    entropy_coef: weight of the entropy bonus.

  Returns:
    The loss, a float32 scalar.
  """
  ratio = tf.exp(new_log_probs - old_log_probs)
  clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
  surrogate = tf.minimum(ratio * advantages, clipped * advantages)
  return -tf.reduce_mean(surrogate) - entropy_coef * tf.reduce_mean(entropy)


def normalized(advantages: np.ndarray, eps: float = 1e-8) -> np.ndarray:
  """`advantages` standardised over the batch: zero mean, unit standard deviation.

  Centring on the batch mean rather than the lagging moving average keeps a batch
  that is better than the average so far from reinforcing all of its (already
  likely) choices, which is how the policy collapsed onto a wrong architecture on
  the synthetic benchmark. Left unchanged where that is undefined: a batch of one
  trial, or of equal advantages.
  """
  advantages = np.asarray(advantages, np.float64)
  std = float(np.std(advantages))
  if advantages.size < 2 or std <= eps:
    return advantages.astype(np.float32)
  return ((advantages - advantages.mean()) / std).astype(np.float32)


class RewardBaseline:
  """Exponential moving average of rewards; starts at the first batch's mean.

  Starting at the first mean (rather than 0) keeps the first advantages centred,
  which matters when rewards are APs far from 0.
  """

  def __init__(self, decay: float = 0.95, value: Optional[float] = None):
    self.decay = decay
    self.value = value

  def advantages(self, rewards: Sequence[float]) -> np.ndarray:
    """Advantages of `rewards` against the current baseline (first batch: its mean)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    base = float(np.mean(rewards)) if self.value is None else self.value
    return (rewards - base).astype(np.float32)

  def update(self, rewards: Sequence[float]) -> float:
    """Folds `rewards` in, one at a time in the given order; returns the new value."""
    for r in rewards:
      self.value = float(r) if self.value is None else (
          self.decay * self.value + (1.0 - self.decay) * float(r))
    return self.value


class PPOTrainer:
  """Updates a `Controller` from batches of (actions, sampling log-prob, reward).

  Args:
    controller: the policy.
    config: PPO settings (learning rate, clip, entropy coefficient, epochs, ...).
  """

  def __init__(self, controller: Controller, config: Optional[PPOConfig] = None):
    self.controller = controller
    self.config = config or PPOConfig()
    self.baseline = RewardBaseline(self.config.baseline_decay)
    self.optimizer = keras.optimizers.Adam(self.config.learning_rate,
                                           epsilon=self.config.adam_epsilon)
    controller._ensure_built()
    self.optimizer.build(controller.trainable_variables)
    self.num_updates = 0

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32),
                                tf.TensorSpec([None], tf.float32),
                                tf.TensorSpec([None], tf.float32),
                                tf.TensorSpec([], tf.float32)])
  def _train_step(self, actions, old_log_probs, advantages, entropy_coef):
    variables = self.controller.trainable_variables
    with tf.GradientTape() as tape:
      new_log_probs, entropy = self.controller.score(actions)
      loss = clipped_surrogate_loss(new_log_probs, old_log_probs, advantages, entropy,
                                    self.config.clip_ratio, entropy_coef)
    grads = tape.gradient(loss, variables)
    if self.config.max_grad_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, self.config.max_grad_norm)
    self.optimizer.apply_gradients(zip(grads, variables))
    return loss, tf.reduce_mean(entropy), tf.reduce_mean(old_log_probs - new_log_probs)

  def update(self, actions: np.ndarray, old_log_probs: np.ndarray,
             rewards: Sequence[float]) -> dict[str, float]:
    """One PPO update: `epochs` gradient steps on the whole batch.

    Args:
      actions: int [B, num_steps] sampled action sequences.
      old_log_probs: float [B] their log-probabilities at sampling time.
      rewards: [B] their rewards.

    Returns:
      Statistics: loss (first epoch), entropy, approx_kl (last epoch), baseline
      (after the update), mean reward, advantage spread (before normalisation),
      the entropy coefficient used.
    """
    actions = tf.constant(np.asarray(actions, dtype=np.int32))
    old = tf.constant(np.asarray(old_log_probs, dtype=np.float32))
    advantages = self.baseline.advantages(rewards)
    advantage_std = float(np.std(advantages))
    if self.config.normalize_advantages:
      advantages = normalized(advantages)
    adv = tf.constant(advantages)
    # The schedule reads the update count, which checkpoints store: a resumed search
    # continues it where it stopped.
    entropy_coef = self.config.entropy_coef_at(self.num_updates)
    first_loss = None
    for _ in range(self.config.epochs):
      loss, entropy, approx_kl = self._train_step(actions, old, adv,
                                                  tf.constant(entropy_coef, tf.float32))
      first_loss = float(loss) if first_loss is None else first_loss
    baseline = self.baseline.update(rewards)
    self.num_updates += 1
    return {"loss": first_loss, "entropy": float(entropy), "approx_kl": float(approx_kl),
            "baseline": baseline, "reward_mean": float(np.mean(rewards)),
            "advantage_std": advantage_std, "entropy_coef": entropy_coef}

  def optimizer_state(self) -> list[np.ndarray]:
    return [np.array(v) for v in self.optimizer.variables]

  def set_optimizer_state(self, values: Sequence[np.ndarray]) -> None:
    variables = self.optimizer.variables
    if len(values) != len(variables):
      raise ValueError(f"optimizer state has {len(values)} arrays, the optimizer "
                       f"{len(variables)} variables")
    for var, value in zip(variables, values):
      var.assign(value)
