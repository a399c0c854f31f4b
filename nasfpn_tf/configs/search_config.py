"""Typed config of the architecture search (`ExperimentConfig.search`).

Defaults follow the NASNet-style controller of the NAS-FPN paper (1-layer LSTM of
100 units, PPO with clip 0.2, EMA reward baseline with decay 0.95, 20 trials per
update); the training settings were chosen by measurement on
`bench/search_synthetic.py` (reward = fraction of the 28 decisions equal to a
hidden architecture, 2,000 trials, goal 0.95 = 27 of 28 right):

- Learning rate 3.5e-3, 10x the usual 3.5e-4: on the old floor-0.89 reward (goal
  = 16 of 28 right) it needed 240 trials instead of 475; 1e-2 needed 192, but
  larger steps are untested with noisy (real AP) rewards; batch 10 vs 20 and 2-8
  epochs per update changed little.
- Standardised advantages and an entropy bonus decaying linearly from 0.1 to 0.01
  over the first 100 updates (2,000 trials). With raw advantages and a constant
  1e-4 the policy narrowed onto a wrong architecture and stalled: best 0.89,
  0.86, 0.86 on seeds 0-2, 14-20 distinct architectures in the last 200 trials.
  Now: best 0.96, 1.0, 1.0, first 0.95 at trial 1512, 1440, 1462 (and 6 of 6
  seeds in a direct agent loop, 1324-1479 trials); random search's best is
  0.50-0.54. Alternatives (seeds 0-2, agent loop without journal; "scaled" =
  advantages divided by their deviation but not centred, a variant not kept):
  constant 0.01 reached 0.95 in 0 of 3 seeds (centred or scaled); constant 0.03
  in 2 of 3 (both); constant 0.1 (scaled) stayed near uniform, best <= 0.86;
  0.05 -> 0.005 in 2 of 3 (both); 0.1 -> 0.01 over 75 updates in 3 of 3 centred
  but later (1379-1853), 1 of 3 scaled; 0.1 -> 0.01 over 100 updates scaled in 3
  of 3, later (1470-1490). tanh_constant 2.5 (ENAS; scaled, 1e-4) kept 100-160
  distinct architectures but best <= 0.93; learning rate 1e-3 (scaled, 0.01) was
  too slow, best <= 0.86. The price: on the floor-0.89 reward PPO needs 314
  trials on average instead of 199 (random: 7,453 expected).
- `entropy_decay_updates` is counted in updates, not trials: with a smaller
  budget than 2,000 trials (at batch 20) shorten it, or the policy stays wide.

Every class validates its values in `__post_init__` and names the key on failure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import TYPE_CHECKING, Optional

from nasfpn_tf.configs.errors import ConfigError

if TYPE_CHECKING:  # experiment.py imports this module (ExperimentConfig.search)
  from nasfpn_tf.configs.experiment import ModelConfig

ALGORITHMS = ("ppo", "random")
ENGINES = ("inline", "ray")
# proxy: every trial trains a child (the paper). oneshot: a weight-sharing supernet is
# trained once, trials score its paths in seconds, the top k are re-scored by the proxy.
STRATEGIES = ("proxy", "oneshot")


def _check(cond: bool, key: str, msg: str) -> None:
  if not cond:
    raise ConfigError(key, msg)


@dataclasses.dataclass
class ControllerConfig:
  """The LSTM controller (see `nasfpn_tf.search.controller.Controller`)."""
  units: int = 100
  # Initial weights are uniform in [-init_range, init_range]: a near-uniform first policy.
  init_range: float = 0.1
  # Bounds the logits to +-tanh_constant (None: unbounded), which keeps some exploration.
  tanh_constant: Optional[float] = None
  temperature: float = 1.0

  def __post_init__(self):
    _check(self.units >= 1, "units", f"must be >= 1, got {self.units}")
    _check(self.init_range > 0, "init_range", f"must be > 0, got {self.init_range}")
    _check(self.tanh_constant is None or self.tanh_constant > 0, "tanh_constant",
           f"must be > 0 or null, got {self.tanh_constant}")
    _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclasses.dataclass
class PPOConfig:
  """Proximal Policy Optimization of the controller (see `nasfpn_tf.search.ppo`)."""
  learning_rate: float = 3.5e-3
  clip_ratio: float = 0.2
  # Weight of the entropy bonus at the first update (see entropy_coef_final).
  entropy_coef: float = 0.1
  # Reward baseline: exponential moving average over rewards, in arrival order.
  baseline_decay: float = 0.95
  # Passes of gradient descent over each batch of finished trials.
  epochs: int = 4
  # Adam's epsilon; keep it well below the gradient scale (AP rewards differ by ~1e-2).
  adam_epsilon: float = 1e-7
  # Clips the global gradient norm (None: no clipping).
  max_grad_norm: Optional[float] = None
  # Standardise each batch's advantages (zero mean, unit deviation; see ppo.normalized),
  # so the entropy bonus keeps its weight as the batch's rewards get alike.
  normalize_advantages: bool = True
  # The entropy coefficient moves linearly from entropy_coef to entropy_coef_final over
  # the first entropy_decay_updates PPO updates, then stays (None: constant entropy_coef).
  entropy_coef_final: Optional[float] = 0.01
  entropy_decay_updates: int = 100

  def __post_init__(self):
    _check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
    _check(0 < self.clip_ratio < 1, "clip_ratio", f"must be in (0, 1), got {self.clip_ratio}")
    _check(self.entropy_coef >= 0, "entropy_coef", f"must be >= 0, got {self.entropy_coef}")
    _check(0 <= self.baseline_decay < 1, "baseline_decay",
           f"must be in [0, 1), got {self.baseline_decay}")
    _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
    _check(self.adam_epsilon > 0, "adam_epsilon", f"must be > 0, got {self.adam_epsilon}")
    _check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm",
           f"must be > 0 or null, got {self.max_grad_norm}")
    _check(isinstance(self.normalize_advantages, bool), "normalize_advantages",
           f"must be true or false, got {self.normalize_advantages!r}")
    _check(self.entropy_coef_final is None or self.entropy_coef_final >= 0, "entropy_coef_final",
           f"must be >= 0 or null, got {self.entropy_coef_final}")
    _check(self.entropy_decay_updates >= 1, "entropy_decay_updates",
           f"must be >= 1, got {self.entropy_decay_updates}")

  def entropy_coef_at(self, num_updates: int) -> float:
    """The entropy coefficient of the update that follows `num_updates` earlier ones."""
    if self.entropy_coef_final is None:
      return self.entropy_coef
    frac = min(num_updates / self.entropy_decay_updates, 1.0)
    return self.entropy_coef + frac * (self.entropy_coef_final - self.entropy_coef)


@dataclasses.dataclass
class OneShotConfig:
  """The one-shot strategy (see `nasfpn_tf.search.oneshot`).

  The supernet has the shape of `task.model` (backbone, width, repeats, head) and is
  trained with `trainer`'s schedule stretched to `supernet_steps`; each controller
  trial then scores one path on the held-out split (`task.validation_data`).
  """
  # Training steps of the supernet (one uniformly sampled path per step).
  supernet_steps: int = 2000
  # Training batches whose statistics recalibrate a path's batch norms before scoring.
  calibration_batches: int = 4
  # Held-out batches a path is scored on (0: the whole split).
  eval_batches: int = 0
  # The k best distinct architectures of the controller are re-scored by the stand-alone
  # proxy (child training with `trainer`), Ray Tune's ASHA stopping bad children early
  # at each evaluation (every trainer.validation_interval steps). 0: no re-scoring.
  rescore_top_k: int = 4
  # Each re-scored architecture trains this many children (runtime.seed, +1, ...); it is
  # ranked by their mean AP. One seed of the stand-alone proxy misranks: in the proxy
  # validation (README) single seeds gave Kendall tau 0.73-0.79 against full training and
  # the 3-seed mean 0.82. Costs `rescore_seeds` times the children.
  rescore_seeds: int = 1
  # ASHA: evaluations every child gets, and the fraction (1 / reduction_factor) promoted.
  rescore_grace_evals: int = 1
  rescore_reduction_factor: int = 2

  def __post_init__(self):
    _check(self.supernet_steps >= 1, "supernet_steps", f"must be >= 1, got {self.supernet_steps}")
    _check(self.calibration_batches >= 1, "calibration_batches",
           f"must be >= 1, got {self.calibration_batches}")
    _check(self.eval_batches >= 0, "eval_batches", f"must be >= 0, got {self.eval_batches}")
    _check(self.rescore_top_k >= 0, "rescore_top_k", f"must be >= 0, got {self.rescore_top_k}")
    _check(self.rescore_seeds >= 1, "rescore_seeds", f"must be >= 1, got {self.rescore_seeds}")
    _check(self.rescore_grace_evals >= 1, "rescore_grace_evals",
           f"must be >= 1, got {self.rescore_grace_evals}")
    _check(self.rescore_reduction_factor >= 2, "rescore_reduction_factor",
           f"must be >= 2, got {self.rescore_reduction_factor}")


REWARDS = ("oneshot", "proxy", "full")


@dataclasses.dataclass
class ProxyValidationConfig:
  """`run.py --mode=validate_proxy` (see `nasfpn_tf.search.proxy_validation`)."""
  # Shipped names, compact strings or {label: spec} items, scored besides `num_sampled`
  # uniform samples.
  architectures: list = field(default_factory=lambda: ["fpn", "nasfpn", "panet"])
  num_sampled: int = 7
  sample_seed: int = 1
  # Seeds (runtime.seed 0..seeds-1) each reward is measured with.
  seeds: int = 3
  rewards: list = field(default_factory=lambda: list(REWARDS))
  # The full-budget experiment (its decoder is replaced); "": the embedded default.
  full_config: str = ""
  # A proxy_validation.json the search reads to say whether its reward can be trusted.
  report: str = ""
  # Children of a proxy or full stage trained at once, as Ray Tune trials (search.trial_cpus
  # each, TensorFlow held to that many threads; search.ray_address or --ray_address joins a
  # cluster). 1: one after another in this process.
  max_concurrent: int = 1

  def __post_init__(self):
    _check(isinstance(self.architectures, list) and all(
        isinstance(a, str) or (isinstance(a, dict) and len(a) == 1) for a in self.architectures),
        "architectures", "expected a list of names, spec strings or {label: spec} items")
    _check(self.num_sampled >= 0, "num_sampled", f"must be >= 0, got {self.num_sampled}")
    _check(self.seeds >= 1, "seeds", f"must be >= 1, got {self.seeds}")
    _check(isinstance(self.rewards, list) and all(r in REWARDS for r in self.rewards),
           "rewards", f"{self.rewards} is not a list of {list(REWARDS)}")
    _check(self.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {self.max_concurrent}")


@dataclasses.dataclass
class SearchConfig:
  """What to search, with which algorithm, on which engine, where to keep the results."""
  strategy: str = "proxy"
  algorithm: str = "ppo"
  engine: str = "inline"
  # Finished trials (successful or failed) after which the search stops.
  max_trials: int = 1000
  # Finished trials per PPO update of the controller.
  batch_size: int = 20
  # Stop early once a trial reaches this reward (None: run all max_trials).
  stop_reward: Optional[float] = None
  # Where the journal, controller checkpoints, best specs and plots go (required).
  directory: str = ""
  seed: int = 0
  # The searched pyramid; the proxy task checks that task.model uses the same levels.
  num_cells: int = 7
  min_level: int = 3
  max_level: int = 7
  controller: ControllerConfig = field(default_factory=ControllerConfig)
  ppo: PPOConfig = field(default_factory=PPOConfig)
  oneshot: OneShotConfig = field(default_factory=OneShotConfig)
  validation: ProxyValidationConfig = field(default_factory=ProxyValidationConfig)
  # Resources of one trial (Ray engine).
  trial_cpus: float = 1.0
  trial_gpus: float = 0.0
  # Trials running at once (Ray engine); each batch of this many is started together.
  max_concurrent: int = 2
  # Seconds after which a trial is stopped and counted as failed (Ray engine; 0: no limit).
  trial_time_limit_s: float = 0.0
  # Retries of a failed trial before it is recorded as failed (Ray FailureConfig).
  max_failures: int = 0
  # "" starts a local Ray cluster; "auto" or "host:port" joins a running one (whose
  # workers must have nasfpn_tf installed).
  ray_address: str = ""
  # CPUs of the local Ray cluster (None: all of this machine's).
  ray_num_cpus: Optional[int] = None
  # How many of the best architectures are written as best_1.yaml, best_2.yaml, ...
  num_best: int = 5
  progress_bar: bool = True
  tensorboard: bool = True
  # Architectures (shipped names or compact strings) scored by the same reward after the
  # search, so its best can be read against known designs: run.py writes baselines.json.
  baselines: list = field(default_factory=list)

  def __post_init__(self):
    _check(isinstance(self.controller, ControllerConfig), "controller",
           f"expected a ControllerConfig, got {type(self.controller).__name__}")
    _check(isinstance(self.ppo, PPOConfig), "ppo",
           f"expected a PPOConfig, got {type(self.ppo).__name__}")
    _check(isinstance(self.validation, ProxyValidationConfig), "validation",
           f"expected a ProxyValidationConfig, got {type(self.validation).__name__}")
    _check(isinstance(self.oneshot, OneShotConfig), "oneshot",
           f"expected a OneShotConfig, got {type(self.oneshot).__name__}")
    _check(self.strategy in STRATEGIES, "strategy",
           f"'{self.strategy}' is not one of {list(STRATEGIES)}")
    _check(self.algorithm in ALGORITHMS, "algorithm",
           f"'{self.algorithm}' is not one of {list(ALGORITHMS)}")
    _check(self.engine in ENGINES, "engine", f"'{self.engine}' is not one of {list(ENGINES)}")
    _check(self.max_trials >= 1, "max_trials", f"must be >= 1, got {self.max_trials}")
    _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
    _check(1 <= self.min_level <= self.max_level, "min_level",
           f"need 1 <= min_level <= max_level, got {self.min_level}, {self.max_level}")
    num_levels = self.max_level - self.min_level + 1
    _check(self.num_cells >= num_levels, "num_cells",
           f"{self.num_cells} cells cannot output {num_levels} levels "
           f"(P{self.min_level}..P{self.max_level}); need >= {num_levels}")
    _check(self.trial_cpus >= 0, "trial_cpus", f"must be >= 0, got {self.trial_cpus}")
    _check(self.trial_gpus >= 0, "trial_gpus", f"must be >= 0, got {self.trial_gpus}")
    _check(self.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {self.max_concurrent}")
    _check(self.trial_time_limit_s >= 0, "trial_time_limit_s",
           f"must be >= 0 (0: no limit), got {self.trial_time_limit_s}")
    _check(self.max_failures >= 0, "max_failures", f"must be >= 0, got {self.max_failures}")
    _check(self.ray_num_cpus is None or self.ray_num_cpus >= 1, "ray_num_cpus",
           f"must be >= 1 or null, got {self.ray_num_cpus}")
    _check(self.num_best >= 1, "num_best", f"must be >= 1, got {self.num_best}")
    self._check_baselines()

  def _check_baselines(self) -> None:
    from nasfpn_tf.architecture_spec import SpecError, parse_spec  # local: keeps import light

    _check(isinstance(self.baselines, list), "baselines",
           f"expected a list of spec names or strings, got {type(self.baselines).__name__}")
    for i, value in enumerate(self.baselines):
      _check(isinstance(value, str), f"baselines[{i}]",
             f"expected a spec name or compact string, got {type(value).__name__}")
      try:
        parse_spec(value, self.min_level, self.max_level)
      except SpecError as e:
        raise ConfigError(f"baselines[{i}]", str(e)) from e


def check_matches_model(search: SearchConfig, model: ModelConfig) -> None:
  """Refuses a search whose pyramid levels are not the proxy model's (`task.model`).

  Every trial builds its child on task.model's levels, so a mismatch would fail every trial
  (each a SpecError) and leave a journal of failures: fail once, before the search starts.

  Args:
    search: the `search` section.
    model: the `task.model` section (a ModelConfig).

  Raises:
    ConfigError: naming search.min_level or search.max_level.
  """
  for key in ("min_level", "max_level"):
    ours, theirs = getattr(search, key), getattr(model, key)
    _check(ours == theirs, f"search.{key}",
           f"{ours} but task.model.{key} is {theirs}: the searched pyramid "
           f"(P{search.min_level}..P{search.max_level}) must have the model's levels "
           f"(P{model.min_level}..P{model.max_level})")
