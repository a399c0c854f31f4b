"""The paper's proxy task: the config of a child RetinaNet trained on a small budget.

The reward itself (train the child, return its AP) is `rewards.ProxyReward`;
this module builds what it trains.

The paper's proxy task (approximate): a ResNet-10 backbone, 512x512 inputs and
about 10 epochs on a split of COCO train, scored by AP on a held-out part of
train (~7k images) — never on val, which stays for the final comparison. The
base config carries all of that (`task.train_data`, `task.validation_data`,
`trainer.train_steps`); `proxy_task_config` applies the backbone and input size.

Example:
  base = proxy_task_config(load_config("configs/proxy.yaml"))
  reward_fn = rewards.make_proxy_reward(base, "/tmp/search/children")
  run_search(reward_fn, max_trials=100, directory="/tmp/search", engine="ray", trial_gpus=1)
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from nasfpn_tf.architecture_spec import ArchitectureSpec, SpecError
from nasfpn_tf.configs.experiment import ExperimentConfig


def proxy_task_config(base_config: ExperimentConfig, backbone_depth: int = 10,
                      input_size: Sequence[int] = (512, 512)) -> ExperimentConfig:
  """A copy of `base_config` with the paper's proxy backbone and input size."""
  from nasfpn_tf.configs.loading import override

  return override(base_config, {"task": {"model": {"backbone": {"depth": backbone_depth},
                                                   "input_size": list(input_size)}}})


def child_config(base_config: ExperimentConfig, spec: ArchitectureSpec) -> ExperimentConfig:
  """`base_config` with its decoder replaced by a NAS-FPN decoder of cells `spec`."""
  from nasfpn_tf.configs.loading import override

  model = base_config.task.model
  if (spec.min_level, spec.max_level) != (model.min_level, model.max_level):
    raise SpecError(f"spec covers P{spec.min_level}..P{spec.max_level} but task.model uses "
                    f"P{model.min_level}..P{model.max_level}")
  return override(base_config, {"task": {"model": {"decoder": {
      "type": "nasfpn", "spec": spec.to_records()}}}})


def spec_digest(spec: ArchitectureSpec) -> str:
  """A short, stable name for an architecture (its compact string, hashed)."""
  text = f"{spec.min_level}-{spec.max_level}-{spec.to_string()}"
  return hashlib.sha1(text.encode()).hexdigest()[:16]
