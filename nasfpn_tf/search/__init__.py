"""Architecture search for NAS-FPN: search space, RNN controller, PPO, engines.

The paper's words, and where they live:
  search space   search_space.py (decisions, masks, uniform samples)
  controller     controller.py (the LSTM policy), ppo.py (its training), agents.py
  proxy task     proxy_task.py (reward = AP of a briefly trained child)
  one-shot       ../modeling/decoders/nasfpn_supernet.py, ../modeling/supernet_model.py,
                 oneshot_reward.py (reward = AP of a supernet path), oneshot.py (the
                 supernet -> controller -> re-scoring pipeline), rescore.py (ASHA)
  proxy checks   proxy_validation.py (reward noise and rank correlation)
  search loop    driver.py (journal, updates, reports), engine.py (inline),
                 searcher.py + ray_trial.py (Ray Tune), journal.py, checkpoint.py

`run_search(reward_fn, max_trials, directory, algorithm="ppo"|"random", seed=0,
engine="inline"|"ray", batch_size=..., **search_options)` runs or continues a
search and returns its finished trials. `make_proxy_reward(base_config, root_dir)`
gives the real reward (AP of a child RetinaNet on a small budget);
`SimilarityReward` a synthetic one for testing.

Names are resolved on first use, so that importing `nasfpn_tf.search.<module>`
(as Ray trial workers do) loads neither TensorFlow nor Ray.
"""

import importlib

_EXPORTS = {
    "run_search": "nasfpn_tf.search.engine",
    "run_search_with_config": "nasfpn_tf.search.engine",
    "make_search_config": "nasfpn_tf.search.engine",
    "SearchSpace": "nasfpn_tf.search.search_space",
    "SimilarityReward": "nasfpn_tf.search.search_space",
    "Controller": "nasfpn_tf.search.controller",
    "PPOTrainer": "nasfpn_tf.search.ppo",
    "PPOAgent": "nasfpn_tf.search.agents",
    "RandomAgent": "nasfpn_tf.search.agents",
    "TrialRecord": "nasfpn_tf.search.journal",
    "read_journal": "nasfpn_tf.search.journal",
    "make_proxy_reward": "nasfpn_tf.search.proxy_task",
    "OneShotReward": "nasfpn_tf.search.oneshot_reward",
    "run_oneshot_search": "nasfpn_tf.search.oneshot",
    "validate_proxy": "nasfpn_tf.search.proxy_validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'nasfpn_tf.search' has no attribute '{name}'")


def __dir__():
  return __all__
