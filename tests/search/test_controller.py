"""Controller: sampling, log-probabilities, masks, checkpoints."""

import math
import os

import keras
import numpy as np
import pytest

from nasfpn_tf.configs.search_config import ControllerConfig, PPOConfig
from nasfpn_tf.search.agents import PPOAgent, RandomAgent
from nasfpn_tf.search.checkpoint import CheckpointStore
from nasfpn_tf.search.controller import Controller
from nasfpn_tf.search.search_space import SearchSpace


@pytest.fixture(scope="module")
def controller():
  return Controller(units=32, seed=0)


def _uniform_log_prob(space, actions):
  return -sum(np.log(space.valid_mask(t, actions[:t]).sum()) for t in range(len(actions)))


def test_sample_shapes_and_valid_specs(controller):
  specs, actions, log_probs = controller.sample(16, seed=3)
  assert actions.shape == (16, 28) and actions.dtype == np.int32
  assert log_probs.shape == (16,) and np.all(log_probs < 0)
  for spec, a in zip(specs, actions):
    assert sorted(c.level for c in spec.cells if c.is_output) == [3, 4, 5, 6, 7]
    assert controller.space.spec_to_actions(spec) == a.tolist()


def test_recomputed_log_probs_equal_sampled_ones(controller):
  _, actions, log_probs = controller.sample(32, seed=5)
  recomputed, entropy = controller.log_probs_and_entropy(actions)
  np.testing.assert_allclose(recomputed.numpy(), log_probs, rtol=0, atol=1e-4)
  # Near-uniform start: log-probs close to uniform over the valid choices,
  # entropy at most its maximum.
  space = controller.space
  uniform = np.array([_uniform_log_prob(space, a.tolist()) for a in actions])
  np.testing.assert_allclose(log_probs, uniform, atol=0.5)
  assert np.all(entropy.numpy() <= -uniform.min() + 1e-3)   # max entropy = log #sequences
  assert np.all(entropy.numpy() > 0.9 * -uniform.mean())


def test_sampling_is_reproducible_per_seed_and_row(controller):
  _, a1, lp1 = controller.sample(8, seed=11)
  _, a2, lp2 = controller.sample(3, seed=11)   # a different batch: same rows
  np.testing.assert_array_equal(a1[:3], a2)
  np.testing.assert_allclose(lp1[:3], lp2, atol=1e-5)
  _, a3, _ = controller.sample(8, seed=12)
  assert not np.array_equal(a1, a3)


def test_masked_choices_are_never_sampled_even_when_favoured():
  c = Controller(units=8, seed=1)
  c.build()
  # Logits that grow with the pool index (inputs) and fall with the level: unmasked,
  # every cell would take pool index 10 (not yet there) and every output P3 again.
  kernel, bias = c.heads["input"].get_weights()
  c.heads["input"].set_weights([kernel * 0, 20.0 * np.arange(bias.size, dtype=np.float32)])
  kernel, bias = c.heads["level"].get_weights()
  c.heads["level"].set_weights([kernel * 0, -20.0 * np.arange(bias.size, dtype=np.float32)])
  specs, actions, _ = c.sample(8, seed=0)
  for spec in specs:
    for k, cell in enumerate(spec.cells):
      assert cell.inputs == (4 + k, 4 + k)   # the newest pool entry, never a future one
  # The outputs take the finest level not yet output: P3, P4, ... in order.
  assert [cell.level for cell in specs[0].cells] == [3, 3, 3, 4, 5, 6, 7]


def test_weights_round_trip_through_an_atomic_weights_file(controller, tmp_path):
  path = str(tmp_path / "controller.weights.h5")
  controller.save_weights_atomic(path)
  assert os.listdir(tmp_path) == ["controller.weights.h5"]   # no temp file left
  other = Controller(units=32, seed=9)
  _, actions, log_probs = controller.sample(4, seed=0)
  assert not np.allclose(other.log_probs_and_entropy(actions)[0].numpy(), log_probs, atol=1e-6)
  other.load_weights_file(path)
  np.testing.assert_allclose(other.log_probs_and_entropy(actions)[0].numpy(), log_probs, atol=1e-5)
  with pytest.raises(ValueError, match="weights.h5"):
    controller.save_weights_atomic(str(tmp_path / "c.h5"))


def test_config_round_trip(controller):
  config = controller.get_config()
  clone = Controller.from_config(config)
  for key in ("num_cells", "min_level", "max_level", "units", "init_range", "tanh_constant",
              "temperature", "seed"):
    assert getattr(clone, key) == getattr(controller, key)
  assert keras.saving.get_registered_object("nasfpn_tf>Controller") is Controller


def test_agent_checkpoint_round_trip(tmp_path):
  space = SearchSpace()
  agent = PPOAgent(space, ControllerConfig(units=16), PPOConfig(epochs=1), seed=0)
  proposals = agent.propose([0, 1, 2, 3])
  agent.update([(p.actions, p.log_prob, float(i)) for i, p in enumerate(proposals)])
  store = CheckpointStore(str(tmp_path / "ckpt"))
  store.save(agent, 1, {"trials_consumed": 4})
  fresh = PPOAgent(space, ControllerConfig(units=16), PPOConfig(epochs=1), seed=7)
  assert store.restore(fresh) == {"trials_consumed": 4}
  for a, b in zip(agent.controller.get_state(), fresh.controller.get_state()):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(agent.trainer.optimizer_state(), fresh.trainer.optimizer_state()):
    np.testing.assert_array_equal(a, b)
  assert fresh.trainer.baseline.value == agent.trainer.baseline.value
  assert fresh.num_updates == 1
  # Same weights and ids -> same proposals (what a resumed search relies on).
  again = fresh.propose([5, 6])
  fresh.seed = agent.seed
  assert [p.actions for p in agent.propose([5, 6])] == [p.actions for p in fresh.propose([5, 6])]
  # Another seed: proposals all the same, each a complete decision list with its probability.
  assert len(again) == 2
  assert all(len(p.actions) == len(proposals[0].actions) for p in again)
  assert all(math.isfinite(p.log_prob) and p.log_prob < 0 for p in again)
  # get_state / set_state (what a Ray searcher could pickle) round-trip as well.
  state = agent.get_state()
  other = PPOAgent(space, ControllerConfig(units=16), PPOConfig(epochs=1), seed=3)
  other.set_state(state)
  np.testing.assert_array_equal(other.controller.get_state()[0], agent.controller.get_state()[0])
  with pytest.raises(ValueError, match="algorithm"):
    RandomAgent(space).set_state(state)


def test_checkpoints_keep_the_newest_two(tmp_path):
  store = CheckpointStore(str(tmp_path))
  agent = RandomAgent(SearchSpace())
  for step in range(1, 5):
    agent.num_updates = step
    store.save(agent, step, {"step": step})
  assert [os.path.basename(p) for p in store.list()] == ["ckpt-000003", "ckpt-000004"]
  fresh = RandomAgent(SearchSpace())
  assert store.restore(fresh) == {"step": 4} and fresh.num_updates == 4
