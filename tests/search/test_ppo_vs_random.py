"""Reduced version of bench/search_synthetic.py: PPO needs < 1/3 of random search's trials.

Goal: reward >= 0.95 on SimilarityReward(floor=0.89), i.e. 16 of the 28 decisions
equal to a hidden target. Random search needs 1/P(hit) trials on average, P
computed exactly (checked against brute force in test_search_space.py); single
random runs are geometric and too noisy to compare with on few seeds.
"""

import numpy as np
import pytest

from nasfpn_tf.search import SearchSpace, SimilarityReward, run_search

SEEDS = (0, 1, 2)
GOAL = 0.95


def _trials_to_goal(reward, seed, directory):
  trials = run_search(reward, 1500, directory, algorithm="ppo", seed=seed, stop_reward=GOAL,
                      progress_bar=False, tensorboard=False)
  return next((t.trial + 1 for t in trials if t.ok and t.reward >= GOAL), None)


@pytest.mark.slow   # up to 3 x 1,500 PPO trials
def test_ppo_reaches_the_goal_in_under_a_third_of_random_search_trials(tmp_path):
  space = SearchSpace()
  rewards = [SimilarityReward(space, floor=0.89, seed=s) for s in SEEDS]
  random_expected = rewards[0].random_search_expected_trials(GOAL)
  assert 7000 < random_expected < 8000
  ppo = [_trials_to_goal(r, s, str(tmp_path / f"ppo-{s}")) for r, s in zip(rewards, SEEDS)]
  assert all(n is not None for n in ppo), ppo
  assert np.mean(ppo) <= random_expected / 3, (ppo, random_expected)
