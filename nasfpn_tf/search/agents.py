"""Search algorithms behind one engine-agnostic interface.

An agent proposes architectures and learns from their rewards:

  proposals = agent.propose([12, 13])        # proposal ids -> Proposal(spec, actions, log_prob)
  stats = agent.update([(actions, log_prob, reward), ...])
  state = agent.get_state(); agent.set_state(state)   # numpy/JSON only, picklable
  agent.save_files(folder); agent.load_files(folder)    # what CheckpointStore writes

Proposal i draws its randomness from the stream `[seed, i]`, so the same id and
the same weights give the same architecture — a resumed search re-proposes
exactly what a killed one had in flight.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from nasfpn_tf.architecture_spec import ArchitectureSpec
from nasfpn_tf.configs.search_config import ControllerConfig, PPOConfig
from nasfpn_tf.search.search_space import SearchSpace

# (actions, log-probability at sampling time, reward)
Outcome = tuple[Sequence[int], float, float]


@dataclasses.dataclass
class Proposal:
  """An architecture to evaluate.

  Attributes:
    index: the proposal id (unique within a search directory).
    spec: the architecture.
    actions: its action sequence in the search space.
    log_prob: its log-probability under the policy that sampled it.
    policy_version: number of agent updates before it was sampled.
  """
  index: int
  spec: ArchitectureSpec
  actions: list[int]
  log_prob: float
  policy_version: int = 0


class RandomAgent:
  """Random search: every decision uniform over its valid choices; never learns."""
  algorithm = "random"

  def __init__(self, space: SearchSpace, seed: int = 0):
    self.space = space
    self.seed = seed
    self.num_updates = 0
    self._log_prob_cache: dict[tuple[int, ...], float] = {}

  def propose(self, indices: Sequence[int]) -> list[Proposal]:
    proposals = []
    for i in indices:
      actions = self.space.sample_uniform(np.random.default_rng([self.seed, int(i)]))
      proposals.append(Proposal(int(i), self.space.actions_to_spec(actions), actions,
                                self._log_prob(actions), self.num_updates))
    return proposals

  def _log_prob(self, actions: Sequence[int]) -> float:
    total = 0.0
    for step in range(len(actions)):
      total -= np.log(np.count_nonzero(self.space.valid_mask(step, actions[:step])))
    return float(total)

  def update(self, batch: Sequence[Outcome]) -> dict[str, float]:
    self.num_updates += 1
    rewards = [r for _, _, r in batch]
    return {"reward_mean": float(np.mean(rewards))} if rewards else {}

  def get_state(self) -> dict[str, Any]:
    return {"algorithm": self.algorithm, "num_updates": self.num_updates}

  def set_state(self, state: dict[str, Any]) -> None:
    _check_algorithm(self.algorithm, state)
    self.num_updates = int(state["num_updates"])

  def save_files(self, directory: str) -> None:
    """Writes the state into `directory` (a fresh folder that is renamed afterwards)."""
    _write_json(os.path.join(directory, "agent.json"), self.get_state())

  def load_files(self, directory: str) -> None:
    self.set_state(_read_json(os.path.join(directory, "agent.json")))


class PPOAgent:
  """The NAS-FPN controller trained with PPO.

  Args:
    space: the search space.
    controller_config: LSTM size and logit shaping.
    ppo_config: learning rate, clip, entropy coefficient, epochs, baseline decay.
    seed: seeds the controller's initial weights and the sampling streams.
  """
  algorithm = "ppo"

  def __init__(self, space: SearchSpace, controller_config: Optional[ControllerConfig] = None,
               ppo_config: Optional[PPOConfig] = None, seed: int = 0):
    # TensorFlow is imported here so that random search and Ray workers never load it.
    from nasfpn_tf.search.controller import Controller
    from nasfpn_tf.search.ppo import PPOTrainer

    cc = controller_config or ControllerConfig()
    self.space = space
    self.seed = seed
    self.controller = Controller(space.num_cells, space.min_level, space.max_level,
                                 units=cc.units, init_range=cc.init_range,
                                 tanh_constant=cc.tanh_constant, temperature=cc.temperature,
                                 seed=seed)
    self.trainer = PPOTrainer(self.controller, ppo_config)

  @property
  def num_updates(self) -> int:
    return self.trainer.num_updates

  def propose(self, indices: Sequence[int]) -> list[Proposal]:
    if not indices:
      return []
    actions, log_probs = self.controller.sample_actions([[self.seed, int(i)] for i in indices])
    return [Proposal(int(i), self.space.actions_to_spec(a), [int(x) for x in a], float(lp),
                     self.num_updates)
            for i, a, lp in zip(indices, actions, log_probs)]

  def update(self, batch: Sequence[Outcome]) -> dict[str, float]:
    """One PPO update on finished trials (failed ones must be left out by the caller)."""
    if not batch:
      return {}
    actions = np.asarray([a for a, _, _ in batch], dtype=np.int32)
    log_probs = np.asarray([lp for _, lp, _ in batch], dtype=np.float32)
    rewards = [float(r) for _, _, r in batch]
    return self.trainer.update(actions, log_probs, rewards)

  def get_state(self) -> dict[str, Any]:
    return {"algorithm": self.algorithm, "num_updates": self.trainer.num_updates,
            "baseline": self.trainer.baseline.value,
            "weights": self.controller.get_state(),
            "optimizer": self.trainer.optimizer_state()}

  def set_state(self, state: dict[str, Any]) -> None:
    _check_algorithm(self.algorithm, state)
    self.controller.set_state(state["weights"])
    self.trainer.set_optimizer_state(state["optimizer"])
    self.trainer.baseline.value = state["baseline"]
    self.trainer.num_updates = int(state["num_updates"])

  def save_files(self, directory: str) -> None:
    """Writes weights (Keras `.weights.h5`), Adam slots and baseline into `directory`."""
    from nasfpn_tf import file_io

    self.controller.save_weights_atomic(os.path.join(directory, _WEIGHTS_FILE))
    slots = io.BytesIO()
    np.savez(slots, *self.trainer.optimizer_state())
    file_io.write_bytes(os.path.join(directory, _OPTIMIZER_FILE), slots.getvalue())
    _write_json(os.path.join(directory, "agent.json"),
                {"algorithm": self.algorithm, "num_updates": self.trainer.num_updates,
                 "baseline": self.trainer.baseline.value})

  def load_files(self, directory: str) -> None:
    state = _read_json(os.path.join(directory, "agent.json"))
    _check_algorithm(self.algorithm, state)
    self.controller.load_weights_file(os.path.join(directory, _WEIGHTS_FILE))
    with np.load(os.path.join(directory, _OPTIMIZER_FILE)) as slots:
      self.trainer.set_optimizer_state([slots[f"arr_{i}"] for i in range(len(slots.files))])
    self.trainer.baseline.value = state["baseline"]
    self.trainer.num_updates = int(state["num_updates"])


_WEIGHTS_FILE = "controller.weights.h5"
_OPTIMIZER_FILE = "optimizer.npz"


def _write_json(path: str, data: dict[str, Any]) -> None:
  from nasfpn_tf import file_io  # local: file_io imports TensorFlow

  file_io.write_json(path, data, indent=None)


def _read_json(path: str) -> dict[str, Any]:
  from nasfpn_tf import file_io

  return json.loads(file_io.read_text(path))


def _check_algorithm(expected: str, state: dict[str, Any]) -> None:
  if state.get("algorithm") != expected:
    raise ValueError(f"agent state is for algorithm '{state.get('algorithm')}', "
                     f"this agent is '{expected}'")


def make_agent(algorithm: str, space: SearchSpace,
               controller_config: Optional[ControllerConfig] = None,
               ppo_config: Optional[PPOConfig] = None, seed: int = 0):
  """`"ppo"` -> `PPOAgent`, `"random"` -> `RandomAgent`."""
  if algorithm == "ppo":
    return PPOAgent(space, controller_config, ppo_config, seed)
  if algorithm == "random":
    return RandomAgent(space, seed)
  raise ValueError(f"algorithm '{algorithm}' is not one of ['ppo', 'random']")
