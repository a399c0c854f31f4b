import os

import pytest

from nasfpn_tf.configs.experiment import ConfigError, ExperimentConfig
from nasfpn_tf.configs.loading import load_config, override, parse_override

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_override_pairs_with_lists():
  c = load_config(params_override="task.model.input_size=[256,384],trainer.train_steps=7,"
                                  "task.model.decoder.type=nasfpn")
  assert c.task.model.input_size == [256, 384]
  assert c.trainer.train_steps == 7 and c.task.model.decoder.type == "nasfpn"


def test_required_keys_exist():
  c = ExperimentConfig()
  for dotted in ("task.model.num_classes", "task.model.input_size", "task.model.backbone.depth",
                 "task.model.decoder.type", "task.train_data.annotation_file",
                 "task.train_data.image_dir", "task.validation_data.annotation_file",
                 "task.validation_data.image_dir", "task.train_data.global_batch_size",
                 "trainer.train_steps"):
    node = c
    for part in dotted.split("."):
      node = getattr(node, part)


@pytest.mark.parametrize("text, key", [
    ("task.model.foo=1", "task.model.foo"),
    ("task.model.input_size=[100,256]", "task.model.input_size[0]"),
    ("task.train_data.source=bar", "task.train_data.source"),
    ("task.model.backbone.depth=7", "task.model.backbone.depth"),
    ("task.model.num_classes=abc", "task.model.num_classes"),
    ("trainer.train_steps=1.5", "trainer.train_steps"),
    ("runtime.strategy=gpu", "runtime.strategy"),
])
def test_bad_key_or_value_names_the_key(text, key):
  with pytest.raises(ConfigError) as err:
    load_config(params_override=text)
  assert str(err.value).startswith(key + ":")


def test_yaml_file_with_one_level_of_base(tmp_path):
  (tmp_path / "base.yaml").write_text("task:\n  model:\n    num_classes: 6\n")
  (tmp_path / "child.yaml").write_text("base: base.yaml\ntrainer:\n  train_steps: 3\n")
  c = load_config(str(tmp_path / "child.yaml"))
  assert c.task.model.num_classes == 6 and c.trainer.train_steps == 3
  (tmp_path / "grandchild.yaml").write_text("base: child.yaml\n")
  with pytest.raises(ConfigError, match="only one level"):
    load_config(str(tmp_path / "grandchild.yaml"))


def test_override_from_yaml_file_and_copy_semantics(tmp_path):
  (tmp_path / "o.yaml").write_text("trainer:\n  train_steps: 11\n")
  assert parse_override(str(tmp_path / "o.yaml")) == {"trainer": {"train_steps": 11}}
  base = ExperimentConfig()
  changed = override(base, "trainer.train_steps=5")
  assert changed.trainer.train_steps == 5 and base.trainer.train_steps != 5


def test_malformed_yaml_names_file(tmp_path):
  bad = tmp_path / "bad.yaml"
  bad.write_text("task: [unclosed\n")
  with pytest.raises(ConfigError, match="bad.yaml"):
    load_config(str(bad))


def test_shipped_configs_load():
  names = [n for n in os.listdir(CONFIG_DIR) if n.endswith(".yaml") and not n.startswith("search")]
  assert names
  for name in names:
    load_config(os.path.join(CONFIG_DIR, name))
