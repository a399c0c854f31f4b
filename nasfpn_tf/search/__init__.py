"""Architecture search for NAS-FPN. The paper's words, and the files that hold them:

  search space       search_space.py     the 4 decisions per merging cell, masks, samples
  controller         controller.py       the LSTM policy; ppo.py trains it; agents.py wraps
                                         it (or random search) behind propose / update
  reward             rewards.py          ProxyReward, OneShotReward, SimilarityReward
  proxy task         proxy_task.py       the child config a ProxyReward trains
  one-shot supernet  ../modeling/decoders/nasfpn_supernet.py and ../modeling/supernet_model.py
                     (the network); oneshot.py (supernet -> controller -> re-scoring);
                     rescore.py (stand-alone children under ASHA)
  search loop        inline_engine.py    `run_search`, the entry point, and the inline engine
                     ray_engine.py       the Ray Tune engine (trainable, Searcher)
                     search_directory.py SearchDriver: one directory's journal, updates,
                                         checkpoints, reports; journal.py, checkpoint.py,
                                         reporting.py are its files
  proxy validation   proxy_validation.py reward noise and rank correlation with full training
  command line       cli.py              `run.py --mode=search`

`run_search(reward_fn, max_trials, directory, algorithm="ppo"|"random", seed=0,
engine="inline"|"ray", batch_size=..., **search_options)` runs or continues a
search and returns its finished trials. `make_proxy_reward(base_config, root_dir)`
gives the real reward (AP of a child RetinaNet on a small budget);
`SimilarityReward` a synthetic one for testing.

Names are resolved on first use, so that importing `nasfpn_tf.search.<module>`
(as Ray trial workers do) loads neither TensorFlow nor Ray. Every file the search
writes goes through `nasfpn_tf.file_io` (imported on use), except the lines the journal
and the events log append and fsync (see journal.py for why).
"""

import importlib

_EXPORTS = {
    "run_search": "nasfpn_tf.search.inline_engine",
    "run_search_with_config": "nasfpn_tf.search.inline_engine",
    "make_search_config": "nasfpn_tf.search.inline_engine",
    "SearchSpace": "nasfpn_tf.search.search_space",
    "Controller": "nasfpn_tf.search.controller",
    "PPOTrainer": "nasfpn_tf.search.ppo",
    "PPOAgent": "nasfpn_tf.search.agents",
    "RandomAgent": "nasfpn_tf.search.agents",
    "SearchDriver": "nasfpn_tf.search.search_directory",
    "TrialRecord": "nasfpn_tf.search.journal",
    "read_journal": "nasfpn_tf.search.journal",
    "ProxyReward": "nasfpn_tf.search.rewards",
    "make_proxy_reward": "nasfpn_tf.search.rewards",
    "OneShotReward": "nasfpn_tf.search.rewards",
    "SimilarityReward": "nasfpn_tf.search.rewards",
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
