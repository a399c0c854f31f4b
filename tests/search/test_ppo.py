"""PPO: the loss by hand, the baseline, and learning to prefer the better architecture."""

import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.configs.search_config import PPOConfig
from nasfpn_tf.search.controller import Controller
from nasfpn_tf.search.ppo import (PPOTrainer, RewardBaseline, clipped_surrogate_loss,
                                  normalized)


def test_clipped_surrogate_loss_by_hand():
  new = np.array([-1.0, -2.0, -3.0, -0.5], np.float32)
  old = np.array([-1.5, -1.5, -3.0, -1.0], np.float32)
  adv = np.array([1.0, -2.0, 0.5, -1.0], np.float32)
  ent = np.array([2.0, 4.0, 6.0, 8.0], np.float32)
  # ratios e^0.5 = 1.6487 (clipped to 1.2, A > 0: min(1.6487, 1.2) = 1.2),
  # e^-0.5 = 0.6065 (clipped 0.8; A = -2: min(-1.2131, -1.6) = -1.6),
  # 1 (A = 0.5: 0.5), e^0.5 (A = -1: min(-1.6487, -1.2) = -1.6487).
  surrogate = np.array([1.2, -1.6, 0.5, -np.exp(0.5)])
  expected = -surrogate.mean() - 0.01 * ent.mean()
  loss = clipped_surrogate_loss(tf.constant(new), tf.constant(old), tf.constant(adv),
                                tf.constant(ent), clip_ratio=0.2, entropy_coef=0.01)
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert expected == pytest.approx(-(1.2 - 1.6 + 0.5 - 1.6487213) / 4 - 0.05, rel=1e-6)


def test_loss_gradient_vanishes_outside_the_clip_band():
  new = tf.Variable([0.5, 0.1])   # ratios e^0.5 (clipped) and e^0.1 (inside)
  with tf.GradientTape() as tape:
    loss = clipped_surrogate_loss(new, tf.zeros(2), tf.ones(2), tf.zeros(2), 0.2, 0.0)
  grad = tape.gradient(loss, new).numpy()
  assert grad[0] == 0.0
  assert grad[1] == pytest.approx(-np.exp(0.1) / 2, rel=1e-5)


def test_reward_baseline_is_an_ema_started_at_the_first_mean():
  b = RewardBaseline(decay=0.9)
  np.testing.assert_allclose(b.advantages([1.0, 3.0]), [-1.0, 1.0])   # first batch: its mean
  assert b.update([1.0, 3.0]) == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)   # starts at 1.0, then 3.0
  np.testing.assert_allclose(b.advantages([2.0]), [2.0 - 1.2], rtol=1e-6)
  assert b.update([2.0]) == pytest.approx(0.9 * 1.2 + 0.1 * 2.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_update_matches_the_loss_of_its_batch(normalize):
  controller = Controller(units=16, seed=0)
  trainer = PPOTrainer(controller, PPOConfig(learning_rate=1e-3, epochs=1, entropy_coef=1e-3,
                                             normalize_advantages=normalize))
  _, actions, log_probs = controller.sample(6, seed=1)
  rewards = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.4])
  new, ent = controller.log_probs_and_entropy(actions)
  centred = rewards - 0.4   # first batch: its mean, 2.4 / 6
  # Standard deviation of the centred rewards: sqrt(0.40 / 6) = 0.25820.
  expected_adv = centred / np.sqrt(0.40 / 6) if normalize else centred
  advantages = tf.constant(expected_adv.astype(np.float32))
  expected = float(clipped_surrogate_loss(new, tf.constant(log_probs), advantages, ent, 0.2, 1e-3))
  before = controller.get_state()
  stats = trainer.update(actions, log_probs, rewards)
  assert stats["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
  assert any(not np.array_equal(a, b) for a, b in zip(before, controller.get_state()))
  assert stats["baseline"] == pytest.approx(RewardBaseline(0.95).update(rewards))
  assert stats["advantage_std"] == pytest.approx(np.sqrt(0.40 / 6), rel=1e-5)


def test_normalized_advantages_by_hand():
  np.testing.assert_allclose(normalized(np.array([1.0, 3.0])), [-1.0, 1.0])
  np.testing.assert_allclose(normalized(np.array([0.5, 0.5, 2.0])),
                             np.array([-0.5, -0.5, 1.0]) / np.sqrt(0.5), rtol=1e-6)
  # Undefined cases are left alone: one trial, or all advantages equal.
  np.testing.assert_allclose(normalized(np.array([0.3])), [0.3], rtol=1e-6)
  np.testing.assert_allclose(normalized(np.array([0.2, 0.2])), [0.2, 0.2], rtol=1e-6)


def test_entropy_coefficient_follows_its_schedule():
  config = PPOConfig(entropy_coef=0.1, entropy_coef_final=0.01, entropy_decay_updates=100)
  assert [config.entropy_coef_at(n) for n in (0, 50, 100, 500)] == pytest.approx(
      [0.1, 0.055, 0.01, 0.01])
  assert PPOConfig(entropy_coef=0.2, entropy_coef_final=None).entropy_coef_at(70) == 0.2
  # The trainer uses the coefficient of its update count (which checkpoints store).
  controller = Controller(units=8, seed=0)
  trainer = PPOTrainer(controller, PPOConfig(entropy_coef=0.1, entropy_coef_final=0.0,
                                             entropy_decay_updates=4, epochs=1))
  _, actions, log_probs = controller.sample(4, seed=2)
  trainer.num_updates = 3
  assert trainer.update(actions, log_probs, [0.1, 0.2, 0.3, 0.4])["entropy_coef"] == (
      pytest.approx(0.025))
  assert trainer.update(actions, log_probs, [0.1, 0.2, 0.3, 0.4])["entropy_coef"] == 0.0


def test_controller_learns_to_prefer_the_better_of_two_architectures():
  controller = Controller(units=32, seed=0)
  trainer = PPOTrainer(controller, PPOConfig(learning_rate=3.5e-3, epochs=4))
  space = controller.space
  good = space.spec_to_actions(parse_spec("nasfpn"))
  bad = space.spec_to_actions(parse_spec("P3:sum:0,0 P7:sum:4,4 P7:sum:5,6:out P6:gp:7,1:out "
                                         "P5:sum:2,2:out P4:gp:3,3:out P3:sum:9,8:out"))
  actions = np.array([good, bad] * 4, np.int32)
  rewards = [0.40, 0.38] * 4   # AP-like: a small gap, both far from 0

  def gap():
    lp, _ = controller.log_probs_and_entropy(actions[:2])
    return float(lp[0] - lp[1])

  start = gap()
  for _ in range(15):
    old, _ = controller.log_probs_and_entropy(actions)
    trainer.update(actions, old.numpy(), rewards)
  # log pi(good) - log pi(bad) grows by more than log(100): good is now 100x likelier.
  assert gap() - start > np.log(100)
