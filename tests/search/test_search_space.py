"""Search space: actions <-> specs both ways, masks, size, synthetic reward."""

import math

import numpy as np
import pytest

from nasfpn_tf.architecture_spec import SpecError, parse_spec
from nasfpn_tf.search.rewards import SimilarityReward
from nasfpn_tf.search.search_space import SearchSpace, similarity


def test_published_nasfpn_round_trips():
  space = SearchSpace()
  spec = parse_spec("nasfpn")
  actions = space.spec_to_actions(spec)
  assert len(actions) == 28
  # Cell 0 of the published cell: inputs P4 (1) and P6 (3), level P4, global pooling.
  assert actions[:4] == [1, 3, 1, 1]
  assert space.actions_to_spec(actions) == spec


def test_fpn_is_in_the_five_cell_space():
  space = SearchSpace(num_cells=5)
  spec = parse_spec("fpn")
  assert space.actions_to_spec(space.spec_to_actions(spec)) == spec


@pytest.mark.parametrize("name, msg", [("fpn", "5 cells"), ("panet", "8 cells")])
def test_specs_outside_the_space_are_rejected(name, msg):
  with pytest.raises(SpecError, match=msg):
    SearchSpace().spec_to_actions(parse_spec(name))


def test_every_uniform_sample_is_a_valid_spec_with_each_level_output_once():
  space = SearchSpace()
  rng = np.random.default_rng(0)
  for _ in range(200):
    actions = space.sample_uniform(rng)
    spec = space.actions_to_spec(actions)   # validates
    outputs = [c.level for c in spec.cells if c.is_output]
    assert sorted(outputs) == [3, 4, 5, 6, 7]
    assert [c.is_output for c in spec.cells] == [False, False] + [True] * 5
    assert space.spec_to_actions(spec) == actions


def test_input_masks_grow_with_the_pool():
  space = SearchSpace()
  for cell in range(7):
    for step in (4 * cell, 4 * cell + 1):
      mask = space.static_mask(step)
      assert mask.shape == (11,)   # largest pool: 5 inputs + 6 earlier cells
      assert mask.sum() == 5 + cell and mask[:5 + cell].all()


def test_output_level_masks_exclude_levels_already_output():
  space = SearchSpace()
  actions = [0, 1, 4, 0, 0, 1, 2, 0]            # two inner cells (any level allowed)
  assert space.valid_mask(10, actions + [0, 0]).all()   # cell 2: first output, all levels
  actions += [0, 0, 2, 0]                        # cell 2 outputs P5
  mask = space.valid_mask(14, actions + [0, 0])
  assert mask.tolist() == [True, True, False, True, True]
  actions += [0, 0, 0, 1, 0, 0, 4, 1, 0, 0, 1, 0]   # P3, P7, P4
  mask = space.valid_mask(26, actions + [0, 0])
  assert mask.tolist() == [False, False, False, True, False]   # only P6 is left


def test_check_actions_names_the_cell():
  space = SearchSpace()
  actions = space.spec_to_actions(parse_spec("nasfpn"))
  bad = list(actions)
  bad[0] = 7   # cell 0 can only use inputs 0..4
  with pytest.raises(SpecError, match="cell 0: input_1 action 7"):
    space.actions_to_spec(bad)
  bad = list(actions)
  bad[4 * 6 + 2] = bad[4 * 2 + 2]   # last output cell repeats the first one's level
  with pytest.raises(SpecError, match="cell 6: level"):
    space.actions_to_spec(bad)
  with pytest.raises(SpecError, match="expected 28 actions"):
    space.actions_to_spec(actions[:-1])


def _enumerate(space):
  """All valid action sequences with their uniform-random-search probabilities."""
  out = []

  def walk(prefix, prob):
    if len(prefix) == space.num_steps:
      out.append((prefix, prob))
      return
    choices = np.flatnonzero(space.valid_mask(len(prefix), prefix))
    for a in choices:
      walk(prefix + [int(a)], prob / len(choices))

  walk([], 1.0)
  return out


def test_size_matches_brute_force_on_a_tiny_space():
  space = SearchSpace(num_cells=3, min_level=3, max_level=4)
  sequences = [s for s, _ in _enumerate(space)]
  assert len(sequences) == space.size()
  specs = {space.actions_to_spec(s).to_string() for s in sequences[::7]}
  assert len(specs) == len(sequences[::7])   # distinct sequences give distinct specs


def test_size_of_the_paper_space():
  # (5*6*..*11)^2 input pairs * 5^2 inner levels * 5! output orders * 2^7 ops
  assert SearchSpace().size() == 1_062_233_948_160_000_000
  assert math.isclose(math.log10(SearchSpace().size()), 18.03, abs_tol=0.01)


def test_similarity_reward_has_its_unique_optimum_at_the_target():
  space = SearchSpace()
  reward = SimilarityReward(space, floor=0.9, seed=3)
  assert reward(reward.target) == pytest.approx(1.0)
  other = space.actions_to_spec(space.sample_uniform(np.random.default_rng(1)))
  sim = similarity(space.spec_to_actions(other), reward.target_actions)
  assert reward(other) == pytest.approx(0.9 + 0.1 * sim) and sim < 1
  nasfpn = SimilarityReward(space, target=parse_spec("nasfpn"))
  assert nasfpn(parse_spec("nasfpn")) == 1.0


def test_random_search_hit_probability_is_exact_on_a_tiny_space():
  space = SearchSpace(num_cells=3, min_level=3, max_level=4)
  reward = SimilarityReward(space, floor=0.5, seed=0)
  enumerated = _enumerate(space)
  assert sum(p for _, p in enumerated) == pytest.approx(1.0)
  sims = np.array([similarity(s, reward.target_actions) for s, _ in enumerated])
  probs = np.array([p for _, p in enumerated])
  for goal in (0.75, 0.9, 1.0):
    exact = probs[0.5 + 0.5 * sims >= goal - 1e-12].sum()
    assert reward.random_search_hit_probability(goal) == pytest.approx(exact)
