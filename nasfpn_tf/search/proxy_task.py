"""The real reward of the search: AP of a child RetinaNet trained on a small budget.

The paper's proxy task (approximate): a ResNet-10 backbone, 512x512 inputs and
about 10 epochs on a split of COCO train, scored by AP on a held-out part of
train (~7k images) — never on val, which stays for the final comparison. The
base config carries all of that (`task.train_data`, `task.validation_data`,
`trainer.train_steps`); `proxy_task_config` applies the backbone and input size.

Example:
  base = proxy_task_config(load_config("configs/proxy.yaml"))
  reward_fn = make_proxy_reward(base, "/tmp/search/children")
  run_search(reward_fn, max_trials=100, directory="/tmp/search", engine="ray", trial_gpus=1)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Callable, Sequence

from nasfpn_tf.architecture_spec import ArchitectureSpec, SpecError
from nasfpn_tf.configs.experiment import ConfigError, ExperimentConfig

_REWARD_FILE = "proxy_reward.json"


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


class ProxyReward:
  """Trains and evaluates one child model per call; returns `metrics[metric]`.

  Each architecture gets its own model folder under `root_dir` named by its
  digest, so a retried trial (a crash, a lost worker) resumes its child's
  checkpoints, and an architecture sampled again reuses its stored reward
  instead of training a second child. Picklable: Ray sends it to trial workers,
  which import the trainer (and TensorFlow) only when called.

  Args:
    base_config: the proxy-task experiment; its decoder is replaced per call.
    root_dir: where the children's model folders go (shared by all workers).
    metric: the key of `train_and_evaluate`'s result used as the reward.
  """

  def __init__(self, base_config: ExperimentConfig, root_dir: str, metric: str = "AP"):
    if not isinstance(base_config, ExperimentConfig):
      raise ConfigError("base_config", f"expected an ExperimentConfig, got "
                        f"{type(base_config).__name__}")
    self.base_config = base_config
    self.root_dir = os.path.abspath(os.path.expanduser(root_dir))
    self.metric = metric

  def model_dir(self, spec: ArchitectureSpec) -> str:
    return os.path.join(self.root_dir, f"child_{spec_digest(spec)}")

  def __call__(self, spec: ArchitectureSpec) -> float:
    from nasfpn_tf.trainer import train_and_evaluate

    config = child_config(self.base_config, spec)
    model_dir = self.model_dir(spec)
    stored = _read_reward(model_dir, self.metric)
    if stored is not None:
      return stored
    os.makedirs(model_dir, exist_ok=True)
    # One log line per epoch: many children share the search's console (Ray relays them).
    metrics = train_and_evaluate(config, model_dir, verbose=2)
    if self.metric not in metrics:
      raise KeyError(f"train_and_evaluate returned {sorted(metrics)}, no '{self.metric}'")
    value = float(metrics[self.metric])
    if not math.isfinite(value):
      raise FloatingPointError(f"child {model_dir}: {self.metric} is {value}")
    _write_reward(model_dir, spec, metrics)
    return value


def _read_reward(model_dir: str, metric: str) -> float | None:
  path = os.path.join(model_dir, _REWARD_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    value = json.load(f)["metrics"].get(metric)
  return None if value is None else float(value)


def _write_reward(model_dir: str, spec: ArchitectureSpec, metrics: dict[str, Any]) -> None:
  from nasfpn_tf.search.reporting import atomic_write_text

  atomic_write_text(os.path.join(model_dir, _REWARD_FILE), json.dumps(
      {"spec": spec.to_string(), "metrics": {k: float(v) for k, v in metrics.items()}}))


def make_proxy_reward(base_config: ExperimentConfig, root_dir: str,
                      metric: str = "AP") -> Callable[[ArchitectureSpec], float]:
  """The proxy-task reward: spec -> AP of a child RetinaNet with that decoder.

  Args:
    base_config: proxy-task experiment (small backbone, small budget, held-out
      validation split); see `proxy_task_config`.
    root_dir: folder for the children's checkpoints and stored rewards.
    metric: which COCO metric is the reward ("AP" by default).

  Returns:
    A picklable callable usable as `run_search`'s `reward_fn`.
  """
  return ProxyReward(base_config, root_dir, metric)
