"""SearchConfig validation and loading."""

import pytest

from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.configs.loading import from_dict
from nasfpn_tf.configs.search_config import ControllerConfig, PPOConfig, SearchConfig


def test_defaults_are_the_documented_ones():
  c = SearchConfig()
  assert (c.algorithm, c.engine, c.num_cells) == ("ppo", "inline", 7)
  assert (c.min_level, c.max_level) == (3, 7)
  assert c.controller.units == 100
  assert (c.ppo.clip_ratio, c.ppo.baseline_decay, c.ppo.entropy_coef) == (0.2, 0.95, 0.1)
  assert (c.ppo.normalize_advantages, c.ppo.entropy_coef_final,
          c.ppo.entropy_decay_updates) == (True, 0.01, 100)


@pytest.mark.parametrize("kwargs, key", [
    ({"algorithm": "evolution"}, "algorithm"),
    ({"engine": "spark"}, "engine"),
    ({"max_trials": 0}, "max_trials"),
    ({"batch_size": 0}, "batch_size"),
    ({"num_cells": 4}, "num_cells"),
    ({"min_level": 5, "max_level": 4}, "min_level"),
    ({"trial_gpus": -1.0}, "trial_gpus"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"trial_time_limit_s": -1.0}, "trial_time_limit_s"),
    ({"max_failures": -1}, "max_failures"),
    ({"num_best": 0}, "num_best"),
    ({"ppo": 3}, "ppo"),
])
def test_bad_values_name_their_key(kwargs, key):
  with pytest.raises(ConfigError) as e:
    SearchConfig(**kwargs)
  assert e.value.key == key


@pytest.mark.parametrize("cls, kwargs, key", [
    (PPOConfig, {"clip_ratio": 1.5}, "clip_ratio"),
    (PPOConfig, {"learning_rate": 0.0}, "learning_rate"),
    (PPOConfig, {"epochs": 0}, "epochs"),
    (PPOConfig, {"baseline_decay": 1.0}, "baseline_decay"),
    (PPOConfig, {"normalize_advantages": "yes"}, "normalize_advantages"),
    (PPOConfig, {"entropy_coef_final": -0.1}, "entropy_coef_final"),
    (PPOConfig, {"entropy_decay_updates": 0}, "entropy_decay_updates"),
    (ControllerConfig, {"units": 0}, "units"),
    (ControllerConfig, {"tanh_constant": -1.0}, "tanh_constant"),
])
def test_nested_sections_validate(cls, kwargs, key):
  with pytest.raises(ConfigError) as e:
    cls(**kwargs)
  assert e.value.key == key


def test_loads_from_a_mapping_with_dotted_errors():
  c = from_dict(SearchConfig, {"engine": "ray", "ppo": {"epochs": 2}, "max_concurrent": 4})
  assert c.engine == "ray" and c.ppo.epochs == 2 and c.max_concurrent == 4
  with pytest.raises(ConfigError, match=r"search\.ppo\.epochs"):
    from_dict(SearchConfig, {"ppo": {"epochs": 0}}, "search")
  with pytest.raises(ConfigError, match=r"search\.controller\.layers"):
    from_dict(SearchConfig, {"controller": {"layers": 2}}, "search")


def test_baselines_are_parsed_at_load_time():
  c = from_dict(SearchConfig, {"baselines": ["fpn", "nasfpn"]})
  assert c.baselines == ["fpn", "nasfpn"]
  with pytest.raises(ConfigError) as e:
    SearchConfig(baselines=["fpn", "no_such_spec"])
  assert e.value.key == "baselines[1]"


def test_score_baselines_writes_each_reward(tmp_path):
  from nasfpn_tf.architecture_spec import parse_spec
  from nasfpn_tf.search.cli import score_baselines

  config = SearchConfig(baselines=["fpn", "panet"])
  scores = score_baselines(config, lambda spec: float(len(spec.cells)), str(tmp_path))
  assert scores["fpn"]["reward"] == len(parse_spec("fpn").cells)
  assert scores["panet"]["spec"] == parse_spec("panet").to_string()
  import json
  with open(tmp_path / "baselines.json") as f:
    assert json.load(f) == scores
