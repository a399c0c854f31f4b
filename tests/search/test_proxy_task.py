"""The proxy-task reward: the child config it builds, and (slow) a real tiny child."""

import math
import os
import sys
import types

import pytest

from nasfpn_tf.architecture_spec import SpecError, parse_spec
from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.search.proxy_task import child_config, proxy_task_config, spec_digest
from nasfpn_tf.search.rewards import make_proxy_reward

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_child_config_swaps_in_the_spec_and_leaves_the_base_alone():
  base = ExperimentConfig()
  spec = parse_spec("P4:sum:0,1 P3:sum:0,5 P3:gp:5,6:out P4:sum:1,7:out P5:sum:2,8:out "
                    "P6:sum:3,9:out P7:gp:4,10:out")
  child = child_config(base, spec)
  assert child.task.model.decoder.type == "nasfpn"
  assert parse_spec(child.task.model.decoder.spec) == spec
  assert base.task.model.decoder.type == "fpn"   # untouched
  with pytest.raises(SpecError, match="P3..P6"):
    child_config(base, parse_spec("P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,3:out P6:sum:3,2:out",
                                  min_level=3, max_level=6))


def test_proxy_task_config_uses_the_papers_backbone_and_input():
  config = proxy_task_config(ExperimentConfig())
  assert config.task.model.backbone.depth == 10 and config.task.model.input_size == [512, 512]


def test_reward_trains_one_child_per_architecture(tmp_path, monkeypatch):
  calls = []

  def fake_train_and_evaluate(config, model_dir, verbose=1):
    calls.append((config, model_dir))
    return {"AP": 0.25, "AP50": 0.5}

  monkeypatch.setitem(sys.modules, "nasfpn_tf.trainer",
                      types.SimpleNamespace(train_and_evaluate=fake_train_and_evaluate))
  reward = make_proxy_reward(ExperimentConfig(), str(tmp_path))
  spec = parse_spec("nasfpn")
  assert reward(spec) == 0.25
  config, model_dir = calls[0]
  assert parse_spec(config.task.model.decoder.spec) == spec
  assert model_dir == str(tmp_path / f"child_{spec_digest(spec)}")
  assert reward(spec) == 0.25 and len(calls) == 1   # sampled again: the stored reward
  assert make_proxy_reward(ExperimentConfig(), str(tmp_path), metric="AP50")(
      parse_spec("nasfpn")) == 0.5


@pytest.mark.slow
def test_real_proxy_reward_on_a_tiny_child(tmp_path):
  config = load_config(os.path.join(REPO, "configs", "shapes_nasfpn.yaml"), [
      "task.model.input_size=[128,128],task.model.backbone.depth=10,"
      "task.model.backbone.width_multiplier=0.25,task.model.decoder.filters=16,"
      "task.model.decoder.num_repeats=1,task.model.head.filters=16,task.model.head.num_convs=1",
      f"task.train_data.embedded_dir={tmp_path}/shapes,task.train_data.embedded_num_images=16,"
      "task.train_data.global_batch_size=4,task.train_data.embedded_image_size=128",
      f"task.validation_data.embedded_dir={tmp_path}/shapes,"
      "task.validation_data.embedded_num_images=8,task.validation_data.global_batch_size=4,"
      "task.validation_data.embedded_image_size=128",
      "trainer.train_steps=2,trainer.validation_interval=2,trainer.checkpoint_interval=2,"
      "trainer.backup_interval=1,trainer.learning_rate.warmup_steps=1",
  ])
  reward = make_proxy_reward(config, str(tmp_path / "children"))
  value = reward(parse_spec("nasfpn"))
  assert math.isfinite(value) and 0.0 <= value <= 1.0
