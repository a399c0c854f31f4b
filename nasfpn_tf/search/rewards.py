"""The search's rewards: callables spec -> float, higher is better (`run_search`'s `reward_fn`).

  ProxyReward       the paper's proxy task: AP of a child RetinaNet trained on a small
                    budget (`make_proxy_reward`; the child's config: proxy_task.py).
  OneShotReward     AP of one path of a trained supernet, in about a second
                    (built by `oneshot.make_oneshot_reward`).
  SimilarityReward  synthetic, with a unique known optimum, for testing search
                    algorithms (numpy only).

An exception raised by a reward marks the trial as failed. Importing this module
loads neither TensorFlow nor Ray: Ray trial workers import it to unpickle a
`ProxyReward` or `SimilarityReward`. TensorFlow is loaded when a `ProxyReward` is
called (it trains) and when a `OneShotReward` is built.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Optional

import numpy as np

from nasfpn_tf.architecture_spec import ArchitectureSpec
from nasfpn_tf.configs.experiment import ConfigError, ExperimentConfig
from nasfpn_tf.search.proxy_task import child_config, spec_digest
from nasfpn_tf.search.search_space import SearchSpace, similarity

# ---- the proxy task: a briefly trained child ------------------------------------------

_REWARD_FILE = "proxy_reward.json"


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
    from nasfpn_tf import file_io
    from nasfpn_tf.trainer import train_and_evaluate

    config = child_config(self.base_config, spec)
    model_dir = self.model_dir(spec)
    stored = read_stored_reward(model_dir, self.metric)
    if stored is not None:
      return stored
    file_io.makedirs(model_dir)
    # One log line per epoch: many children share the search's console (Ray relays them).
    metrics = train_and_evaluate(config, model_dir, verbose=2)
    if self.metric not in metrics:
      raise KeyError(f"train_and_evaluate returned {sorted(metrics)}, no '{self.metric}'")
    value = float(metrics[self.metric])
    if not math.isfinite(value):
      raise FloatingPointError(f"child {model_dir}: {self.metric} is {value}")
    write_stored_reward(model_dir, spec, metrics)
    return value


def read_stored_reward(model_dir: str, metric: str) -> float | None:
  """The `metric` a finished child stored in `model_dir` (None if it has not finished)."""
  from nasfpn_tf import file_io

  path = os.path.join(model_dir, _REWARD_FILE)
  if not file_io.exists(path):
    return None
  value = json.loads(file_io.read_text(path))["metrics"].get(metric)
  return None if value is None else float(value)


def write_stored_reward(model_dir: str, spec: ArchitectureSpec, metrics: dict[str, Any]) -> None:
  """Stores a finished child's metrics in `model_dir` (atomically, through file_io)."""
  from nasfpn_tf import file_io

  file_io.write_json(os.path.join(model_dir, _REWARD_FILE), {
      "spec": spec.to_string(), "metrics": {k: float(v) for k, v in metrics.items()}},
      indent=None)


def make_proxy_reward(base_config: ExperimentConfig, root_dir: str,
                      metric: str = "AP") -> Callable[[ArchitectureSpec], float]:
  """The proxy-task reward: spec -> AP of a child RetinaNet with that decoder.

  Args:
    base_config: proxy-task experiment (small backbone, small budget, held-out
      validation split); see `proxy_task.proxy_task_config`.
    root_dir: folder for the children's checkpoints and stored rewards.
    metric: which COCO metric is the reward ("AP" by default).

  Returns:
    A picklable callable usable as `run_search`'s `reward_fn`.
  """
  return ProxyReward(base_config, root_dir, metric)


# ---- one-shot: a path of a trained supernet -----------------------------------------------

def _batch_norms(layer) -> list:
  import keras

  return [l for l in layer._flatten_layers(include_self=False)
          if isinstance(l, keras.layers.BatchNormalization)]


class OneShotReward:
  """spec -> COCO AP of the supernet's path `spec` (a callable reward for `run_search`).

  Scoring architecture `spec` with inherited weights:
  1. select the path (`NasFpnSupernet.set_architecture`);
  2. recalibrate the batch-norm statistics the path depends on (its cells' slots
     and the head's per-level norms) on a few fixed training batches: reset, then
     a cumulative average of the batch statistics. The supernet's running
     statistics mix every path it trained, so they fit none of them (Guo et al.,
     "Single Path One-Shot NAS": without recalibration the ranking is noise);
  3. COCO AP of the detections on the held-out split (never `val`).

  The backbone and the pyramid's input resampling do not depend on the path, so
  their outputs for the calibration and held-out batches are computed once, in
  inference mode, and kept; a score only runs the path's cells, the head and the
  post-processing. Steps 1-3 are deterministic, so the same spec always gets the
  same reward; rewards are also memoised by spec.

  Args:
    model: a trained `SupernetModel`.
    calibration_images: list of float [B, H, W, 3] training batches (fixed).
    eval_batches: list of (images, image_ids, image_infos) of the held-out split.
    coco_gt: its COCO ground truth.
    metric: which COCO metric is the reward.
  """

  def __init__(self, model: Any, calibration_images: list, eval_batches: list, coco_gt: Any,
               metric: str = "AP"):
    import tensorflow as tf

    self.model = model
    self.decoder = model.decoder
    self.coco_gt = coco_gt
    self.metric = metric
    self._calibration = [self._inputs(x) for x in calibration_images]
    self._eval = [(self._inputs(x), np.asarray(ids), np.asarray(infos))
                  for x, ids, infos in eval_batches]
    self._head_norms = _batch_norms(model.head)
    # One trace for every path: the path is variables in the supernet.
    self._score_fn = tf.function(self._detect)
    self._calibrate_fn = None
    self.cache: dict[str, float] = {}

  def _inputs(self, images) -> list:
    return self.decoder.input_features(self.model.backbone_features(images, False), False)

  def _detect(self, feats: list) -> dict:
    out = self.model.head_outputs(self.decoder.run_cells(feats, training=False), training=False)
    return self.model.detection_generator(out["cls_outputs"], out["box_outputs"],
                                          self.model.anchors)

  def _calibration_step(self):
    """A traced training-mode pass whose batch norms keep exactly the last batch's statistics.

    Traced once with momentum 0 on every batch norm a path can use (the traced graph keeps
    that value; the layers' own momentum is put back afterwards): running the calibration
    eagerly, where the momentum can change per batch, took 1.1 of the 2.0 s a score cost.
    """
    import tensorflow as tf

    if self._calibrate_fn is None:
      norms = list(self.decoder.slot_norms.values()) + self._head_norms
      saved = [n.momentum for n in norms]
      feats = self._calibration[0]
      signature = [tf.TensorSpec([None, *f.shape[1:]], f.dtype) for f in feats]
      fn = tf.function(lambda feats: self.model.head_outputs(
          self.decoder.run_cells(feats, training=True), training=True),
          input_signature=[signature])
      try:
        for n in norms:
          n.momentum = 0.0
        self._calibrate_fn = fn.get_concrete_function(signature)
      finally:
        for n, m in zip(norms, saved):
          n.momentum = m
    return self._calibrate_fn

  def recalibrate(self, spec: ArchitectureSpec) -> None:
    """Batch-norm statistics of `spec`'s path and of the head: the mean over the
    calibration batches of each batch's statistics."""
    self.decoder.set_architecture(spec)
    step = self._calibration_step()
    norms = self.decoder.path_norms(spec) + self._head_norms
    means = [np.zeros(n.moving_mean.shape, np.float64) for n in norms]
    variances = [np.zeros(n.moving_variance.shape, np.float64) for n in norms]
    for feats in self._calibration:
      step(feats)
      for n, m, v in zip(norms, means, variances):
        m += np.asarray(n.moving_mean)
        v += np.asarray(n.moving_variance)
    count = len(self._calibration)
    for n, m, v in zip(norms, means, variances):
      n.moving_mean.assign((m / count).astype(np.float32))
      n.moving_variance.assign((v / count).astype(np.float32))

  def evaluate(self, spec: ArchitectureSpec) -> dict[str, float]:
    """Recalibrates `spec`'s path and returns its COCO metrics on the held-out batches."""
    from nasfpn_tf.evaluation.coco_evaluator import coco_metrics, detections_to_coco

    self.recalibrate(spec)
    results, seen = [], []
    for feats, ids, infos in self._eval:
      det = self._score_fn(feats)
      results += detections_to_coco({k: np.asarray(v) for k, v in det.items()}, ids, infos)
      seen += [int(i) for i in ids]
    return coco_metrics(self.coco_gt, results, seen)

  def __call__(self, spec: ArchitectureSpec) -> float:
    key = spec.to_string()
    if key not in self.cache:
      self.cache[key] = float(self.evaluate(spec)[self.metric])
    return self.cache[key]


def cached_batches(dataset, num_batches: Optional[int]) -> list:
  """The first `num_batches` batches (all when None or 0) as a list of tensors."""
  ds = dataset.take(num_batches) if num_batches else dataset
  return list(ds)


# ---- synthetic: similarity to a hidden target --------------------------------------------

class SimilarityReward:
  """A synthetic reward with a unique best architecture, for testing search algorithms.

  reward = floor + (1 - floor) * similarity(actions(spec), actions(target)).
  A high `floor` mimics detection AP, whose values over a search space span a
  narrow band below the best; it sets how hard "within 5% of the optimum" is.
  Picklable (Ray ships it to trial workers) and free of TensorFlow.

  Args:
    space: the search space.
    target: the best architecture; if None, one drawn uniformly with `seed`.
    floor: reward of an architecture that matches no decision.
    seed: seed for drawing the target.
  """

  def __init__(self, space: SearchSpace, target: Optional[ArchitectureSpec] = None,
               floor: float = 0.0, seed: int = 0):
    if not 0.0 <= floor < 1.0:
      raise ValueError(f"floor must be in [0, 1), got {floor}")
    self.space = space
    self.floor = floor
    if target is None:
      target_actions = space.sample_uniform(np.random.default_rng([seed, 0x7a26]))
      target = space.actions_to_spec(target_actions)
    self.target = target
    self.target_actions = space.spec_to_actions(target)

  @property
  def optimum(self) -> float:
    return 1.0

  def __call__(self, spec: ArchitectureSpec) -> float:
    sim = similarity(self.space.spec_to_actions(spec), self.target_actions)
    return self.floor + (1.0 - self.floor) * sim

  def matches_needed(self, reward: float) -> int:
    """Fewest matching decisions whose reward is >= `reward`."""
    n = self.space.num_steps
    frac = (reward - self.floor) / (1.0 - self.floor)
    # Round away float noise before the ceiling (0.95 - 0.89 is not exactly 0.06).
    return max(0, int(math.ceil(round(frac * n, 9))))

  def random_search_hit_probability(self, reward: float) -> float:
    """Exact chance that one uniform random-search sample scores >= `reward`.

    Each decision matches the target independently with probability
    1 / (number of valid choices), except the output levels: their order is a
    uniform random permutation, whose matches with the target's order follow
    the fixed-point distribution of a random permutation.
    """
    space = self.space
    dist = np.array([1.0])
    for d in space.decisions:
      if space.is_output_level_step(d.step):
        continue
      p = 1.0 / np.count_nonzero(space.static_mask(d.step))
      dist = np.convolve(dist, [1.0 - p, p])
    dist = np.convolve(dist, _fixed_point_distribution(space.num_levels))
    return float(dist[self.matches_needed(reward):].sum())

  def random_search_expected_trials(self, reward: float) -> float:
    """Expected trials until uniform random search first scores >= `reward` (1 / p)."""
    return 1.0 / self.random_search_hit_probability(reward)


def _fixed_point_distribution(n: int) -> np.ndarray:
  """P(a uniform random permutation of n items has exactly j fixed points), j = 0..n."""
  derangements = [1, 0]
  for k in range(2, n + 1):
    derangements.append((k - 1) * (derangements[-1] + derangements[-2]))
  counts = [math.comb(n, j) * derangements[n - j] for j in range(n + 1)]
  return np.asarray(counts, dtype=np.float64) / math.factorial(n)
