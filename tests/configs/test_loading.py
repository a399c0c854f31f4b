import json
import os

import pytest

from nasfpn_tf.configs.experiment import ConfigError, ExperimentConfig
from nasfpn_tf.configs.loading import load_config, override, parse_override, read_yaml, to_dict

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_override_pairs_with_lists():
  c = load_config(params_override="task.model.input_size=[256,384],trainer.train_steps=7,"
                                  "task.model.decoder.type=nasfpn")
  assert c.task.model.input_size == [256, 384]
  assert c.trainer.train_steps == 7 and c.task.model.decoder.type == "nasfpn"


@pytest.mark.parametrize("dotted, value", [
    ("task.model.num_classes", 7), ("task.model.input_size", [256, 384]),
    ("task.model.backbone.depth", 18), ("task.model.decoder.type", "nasfpn"),
    ("task.train_data.annotation_file", "/a.json"), ("task.train_data.image_dir", "/img"),
    ("task.validation_data.annotation_file", "/v.json"),
    ("task.validation_data.image_dir", "/vimg"), ("task.train_data.global_batch_size", 3),
    ("trainer.train_steps", 9)])
def test_documented_keys_are_set_by_an_override(dotted, value):
  override_text = f"{dotted}={json.dumps(value).replace(' ', '')}"
  if dotted.endswith(("annotation_file", "image_dir")):   # a path is refused unless read
    split = dotted.split(".")[1]
    override_text += f",task.{split}.source=coco"
    other = "image_dir" if dotted.endswith("annotation_file") else "annotation_file"
    override_text += f",task.{split}.{other}=/other"
  c = load_config(params_override=override_text)
  node = c
  for part in dotted.split("."):
    node = getattr(node, part)
  assert node == value and node != _get(ExperimentConfig(), dotted)


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = getattr(config, part)
  return config


def _flatten(data: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in data.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


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


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(CONFIG_DIR)
                                         if n.endswith(".yaml")))
def test_shipped_configs_load_with_every_value_they_set(name):
  # Search configs included: their `search:` section goes through the same loader.
  path = os.path.join(CONFIG_DIR, name)
  loaded = _flatten(to_dict(load_config(path)))
  given = _flatten(read_yaml(path))   # base file merged in
  assert given
  for key, value in given.items():
    assert loaded[key] == value, (name, key)
