"""`task.init_checkpoint_modules` is validated when the config loads, naming the key."""

import os

import pytest

from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.configs.loading import load_config

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "shapes_nasfpn.yaml")


def test_default_is_all_and_model_gardens_values_load():
  assert load_config(CONFIG, []).task.init_checkpoint_modules == "all"
  for value in ("backbone", "backbone_decoder"):
    config = load_config(CONFIG, [f"task.init_checkpoint_modules={value},"
                                  "task.init_checkpoint=/data/ckpt-28080"])
    assert config.task.init_checkpoint_modules == value


def test_unknown_modules_value_names_the_key():
  with pytest.raises(ConfigError, match=r"^task\.init_checkpoint_modules: 'decoder' is not one "
                     r"of \['backbone', 'backbone_decoder', 'all'\]"):
    load_config(CONFIG, ["task.init_checkpoint_modules=decoder"])


def test_a_keras_file_loads_whole():
  with pytest.raises(ConfigError, match=r"^task\.init_checkpoint_modules: 'backbone' needs a "
                     "TensorFlow checkpoint"):
    load_config(CONFIG, ["task.init_checkpoint=runs/x.weights.h5,"
                         "task.init_checkpoint_modules=backbone"])
