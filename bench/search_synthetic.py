"""PPO controller vs random search on synthetic rewards with a known optimum.

Reward: `SimilarityReward(floor=F)` = F + (1 - F) * (fraction of the 28 decisions
equal to a hidden target architecture, drawn per seed); the target is the unique
best, with reward 1.0. Two reports:

1. No floor (F = 0), the main one: reward = fraction of decisions right, so
   "reward >= 0.95" means 27 of 28 decisions right. Each algorithm runs all
   `--trials` (2,000) trials; reported per seed: the best reward, the first trial
   reaching 0.95, and the distinct architectures among the last 200 trials (a
   stalled policy samples few distinct ones and none of them good; a converged
   one samples few distinct ones too, but they score ~1.0).
2. Floor 0.89 (`--floor_report`, on by default): the old benchmark, where 0.95
   needs only 16 of 28 decisions right. PPO runs until it reaches 0.95; random
   search is given by its exact expected trial count (1 / P(hit), see
   `SimilarityReward.random_search_expected_trials`), as single random runs are
   geometric and vary a lot.

3. `--reward oneshot_like`: a reward shaped like the one-shot reward of
   configs/search_shapes_oneshot.yaml (`OneShotLikeReward`: a narrow AP-like band, a
   weak per-decision signal under per-architecture noise). There is no goal; reported
   per seed: the mean reward of the first and of the last 200 trials, the best, the
   distinct architectures among the last 200 trials and the share of the last 200
   that is their most frequent architecture (a converged policy repeats one).

Both algorithms run through the public `run_search` (inline engine, journal,
checkpoints and all). `--plot PNG` draws seed 0's no-floor runs (PPO, PPO with the
settings before issue 12, random): best and batch-mean reward, and distinct
architectures in the last 200 trials, against the trial.

Run (nice'd: the machine is shared):
  nice -n 10 python bench/search_synthetic.py --plot bench/search_synthetic.png
  nice -n 10 python bench/search_synthetic.py --previous_defaults   # settings before issue 12
  nice -n 10 python bench/search_synthetic.py --entropy_coef 0.03 --entropy_coef_final none
  nice -n 10 python bench/search_synthetic.py --reward oneshot_like
  # the settings of configs/search_shapes_oneshot.yaml:
  nice -n 10 python bench/search_synthetic.py --reward oneshot_like --learning_rate 1e-2 \
      --entropy_coef_final 0 --entropy_decay_updates 40
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nasfpn_tf.search import SearchSpace, SimilarityReward, run_search  # noqa: E402

GOAL = 0.95
WINDOW = 200   # trials over which distinct architectures are counted
# PPOConfig values before issue 12 (constant tiny entropy bonus, raw advantages).
PREVIOUS_DEFAULTS = {"normalize_advantages": False, "entropy_coef": 1e-4,
                     "entropy_coef_final": None}


class OneShotLikeReward:
  """A synthetic reward with the spread of the one-shot reward on the embedded set.

  Measured on the 2,000 trials of `python run.py --mode=search
  --config_file=configs/search_shapes_oneshot.yaml` (its trials.jsonl): AP 0.032-0.113;
  the first 250 trials, sampled near uniformly, had mean 0.080 and deviation 0.017; a
  model additive over the 28 decisions (ridge regression on one-hot actions) explained
  40% of the variance on held-out trials. Here:

    reward = 0.080 + additive(actions) + noise(spec)

  where `additive` sums one fixed random effect per (decision, choice), scaled so that
  its deviation over uniform samples is sqrt(0.4) x 0.017, and `noise` is a normal draw
  fixed per architecture (seeded by its string; interactions and the supernet's error
  look like that to the controller) with deviation sqrt(0.6) x 0.017. Deterministic,
  as the one-shot reward is. Numpy only.
  """
  MEAN, STD, ADDITIVE_SHARE = 0.080, 0.017, 0.4

  def __init__(self, space: SearchSpace, seed: int = 0, calibration_samples: int = 4000):
    self.space = space
    self.seed = seed
    rng = np.random.default_rng([seed, 0x05407])
    self.effects = rng.normal(size=(space.num_steps, max(space.kind_sizes().values())))
    sample = np.random.default_rng([seed, 1])
    raw = [self._raw(space.sample_uniform(sample)) for _ in range(calibration_samples)]
    self.offset = float(np.mean(raw))
    self.scale = np.sqrt(self.ADDITIVE_SHARE) * self.STD / float(np.std(raw))

  def _raw(self, actions) -> float:
    return float(self.effects[np.arange(len(actions)), actions].sum())

  def additive(self, spec) -> float:
    return self.scale * (self._raw(self.space.spec_to_actions(spec)) - self.offset)

  def __call__(self, spec) -> float:
    digest = hashlib.sha256(f"{self.seed}:{spec.to_string()}".encode()).digest()
    noise = np.random.default_rng(int.from_bytes(digest[:8], "little")).normal()
    return (self.MEAN + self.additive(spec)
            + np.sqrt(1.0 - self.ADDITIVE_SHARE) * self.STD * noise)


def run(reward_fn, algorithm: str, seed: int, max_trials: int, directory: str,
        stop_reward: Optional[float] = None, **options) -> list:
  """One search; returns its finished trials in trial order."""
  trials = run_search(reward_fn, max_trials, directory, algorithm=algorithm, seed=seed,
                      stop_reward=stop_reward, progress_bar=False, tensorboard=False, **options)
  return sorted((t for t in trials if t.ok), key=lambda t: t.trial)


def summary(trials: list) -> dict:
  """Best reward, first trial (1-based) reaching GOAL, distinct specs in the last WINDOW."""
  rewards = [t.reward for t in trials]
  hit = next((t.trial + 1 for t in trials if t.reward >= GOAL), None)
  distinct = len({t.spec.to_string() for t in trials[-WINDOW:]})
  return {"best": max(rewards), "hit": hit, "distinct": distinct,
          "final_mean": float(np.mean(rewards[-WINDOW:]))}


def oneshot_like_summary(trials: list) -> dict:
  """Mean reward of the first and last WINDOW trials, best, distinct and top share at the end."""
  rewards = [t.reward for t in trials]
  names = [t.spec.to_string() for t in trials[-WINDOW:]]
  return {"first_mean": round(float(np.mean(rewards[:WINDOW])), 4),
          "last_mean": round(float(np.mean(rewards[-WINDOW:])), 4),
          "best": round(max(rewards), 4), "distinct": len(set(names)),
          "top_share": round(collections.Counter(names).most_common(1)[0][1] / len(names), 3)}


def curves(trials: list, batch: int) -> dict:
  """Per-trial best-so-far reward, per-batch mean, distinct specs in a trailing window."""
  rewards = np.array([t.reward for t in trials])
  names = [t.spec.to_string() for t in trials]
  distinct = [len(set(names[max(0, i + 1 - WINDOW):i + 1])) for i in range(len(names))]
  n = len(rewards) // batch * batch
  return {"best": np.maximum.accumulate(rewards),
          "batch_x": np.arange(n // batch) * batch + batch,
          "batch_mean": rewards[:n].reshape(-1, batch).mean(axis=1),
          "distinct": np.array(distinct)}


def plot(runs: list, batch: int, path: str, title: str) -> None:
  """`runs`: (label, trials) pairs, drawn in colours C0, C1, ..."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (top, bottom) = plt.subplots(2, 1, figsize=(9.5, 6.5), sharex=True)
  for i, (name, trials) in enumerate(runs):
    color = f"C{i}"
    c = curves(trials, batch)
    x = np.arange(1, len(c["best"]) + 1)
    top.plot(x, c["best"], color=color, label=f"{name}: best so far")
    top.plot(c["batch_x"], c["batch_mean"], color=color, alpha=0.5, linestyle="--",
             label=f"{name}: batch mean")
    bottom.plot(x, c["distinct"], color=color, label=name)
  top.axhline(GOAL, color="gray", linewidth=0.8, linestyle=":")
  top.set_ylabel("reward (fraction of decisions right)")
  top.set_ylim(0, 1.02)
  top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
  top.set_title(title, fontsize=9)
  bottom.set_ylabel(f"distinct architectures\nin the last {WINDOW} trials")
  bottom.set_xlabel("trial")
  bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  print(f"wrote {path}")


def _optional_float(value: str) -> Optional[float]:
  return None if value.lower() in ("none", "null") else float(value)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--first_seed", type=int, default=0,
                      help="runs seeds first_seed .. first_seed + seeds - 1")
  parser.add_argument("--trials", type=int, default=2000, help="trials per no-floor run")
  parser.add_argument("--floor_report", type=float, default=0.89,
                      help="floor of the old report (negative: skip it)")
  parser.add_argument("--floor_max_trials", type=int, default=5000)
  parser.add_argument("--plot", default="", help="PNG path for seed 0's no-floor curves")
  parser.add_argument("--batch_size", type=int, default=20, help="SearchConfig's default: 20")
  parser.add_argument("--previous_defaults", action="store_true",
                      help=f"PPO with the settings before issue 12: {PREVIOUS_DEFAULTS}")
  parser.add_argument("--learning_rate", type=float, default=None, help="default: PPOConfig's")
  parser.add_argument("--epochs", type=int, default=None, help="default: PPOConfig's")
  parser.add_argument("--entropy_coef", type=float, default=None, help="default: PPOConfig's")
  parser.add_argument("--entropy_coef_final", type=_optional_float, default=argparse.SUPPRESS,
                      help="default: PPOConfig's; 'none' for a constant coefficient")
  parser.add_argument("--entropy_decay_updates", type=int, default=None,
                      help="default: PPOConfig's")
  parser.add_argument("--normalize_advantages", type=lambda v: v.lower() == "true", default=None)
  parser.add_argument("--tanh_constant", type=float, default=None,
                      help="default: ControllerConfig's")
  parser.add_argument("--reward", choices=("similarity", "oneshot_like"), default="similarity",
                      help="similarity: reports 1 and 2; oneshot_like: report 3")
  parser.add_argument("--skip_random", action="store_true", help="PPO only (report 1 and 3)")
  args = parser.parse_args()
  ppo_options = dict(PREVIOUS_DEFAULTS) if args.previous_defaults else {}
  given = vars(args)   # entropy_coef_final is absent unless given (None is a value)
  for key in ("learning_rate", "epochs", "entropy_coef", "entropy_coef_final",
              "entropy_decay_updates", "normalize_advantages"):
    if key in given and (given[key] is not None or key == "entropy_coef_final"):
      ppo_options[key] = given[key]
  options = {"batch_size": args.batch_size, "ppo": ppo_options}
  if args.tanh_constant is not None:
    options["controller"] = {"tanh_constant": args.tanh_constant}
  print(f"PPO options (over PPOConfig's defaults): {ppo_options}", flush=True)

  space = SearchSpace()
  if args.reward == "oneshot_like":
    oneshot_like_report(space, args, options)
    return
  rows, floor_rows = [], []
  start = time.time()
  with tempfile.TemporaryDirectory(prefix="nasfpn_search_bench_") as root:
    for seed in range(args.first_seed, args.first_seed + args.seeds):
      reward = SimilarityReward(space, floor=0.0, seed=seed)
      t0 = time.time()
      ppo = run(reward, "ppo", seed, args.trials, os.path.join(root, f"ppo-{seed}"), **options)
      t1 = time.time()
      rnd = [] if args.skip_random else run(reward, "random", seed, args.trials,
                                            os.path.join(root, f"random-{seed}"))
      t2 = time.time()
      skipped = {"best": float("nan"), "hit": None, "distinct": "-"}
      rows.append((seed, summary(ppo), summary(rnd) if rnd else skipped, t1 - t0, t2 - t1))
      print(f"seed {seed}: ppo {rows[-1][1]} ({t1 - t0:.0f} s), random {rows[-1][2]} "
            f"({t2 - t1:.0f} s)", flush=True)
      if seed == args.first_seed and args.plot:
        runs = [("PPO", ppo)]
        if not args.previous_defaults:
          previous = run(reward, "ppo", seed, args.trials, os.path.join(root, "ppo-previous"),
                         batch_size=args.batch_size, ppo=PREVIOUS_DEFAULTS)
          runs.append(("PPO, settings before issue 12", previous))
        plot(runs + [("random", rnd)], args.batch_size, args.plot,
             f"no-floor synthetic reward (seed 0); PPO options {ppo_options or 'default'}")
    if args.floor_report >= 0:
      for seed in range(args.first_seed, args.first_seed + args.seeds):
        reward = SimilarityReward(space, floor=args.floor_report, seed=seed)
        t0 = time.time()
        trials = run(reward, "ppo", seed, args.floor_max_trials,
                     os.path.join(root, f"floor-ppo-{seed}"), stop_reward=GOAL, **options)
        floor_rows.append((seed, summary(trials)["hit"], time.time() - t0))
        print(f"floor {args.floor_report} seed {seed}: ppo {floor_rows[-1][1]} trials "
              f"({floor_rows[-1][2]:.0f} s)", flush=True)

  print(f"\nNo floor: reward = fraction of the {space.num_steps} decisions right; goal >= {GOAL} "
        f"(>= {SimilarityReward(space).matches_needed(GOAL)} right); {args.trials} trials each")
  print(f"{'seed':>4} | {'PPO best':>8} | {'PPO to 0.95':>11} | {'PPO distinct':>12} | "
        f"{'random best':>11} | {'random to 0.95':>14} | {'random distinct':>15}")
  print("-" * 95)
  for seed, p, r, _, _ in rows:
    print(f"{seed:>4} | {p['best']:>8.3f} | {_fmt(p['hit']):>11} | {p['distinct']:>12} | "
          f"{r['best']:>11.3f} | {_fmt(r['hit']):>14} | {r['distinct']:>15}")
  reached = sum(p["hit"] is not None for _, p, _, _, _ in rows)
  print(f"PPO reached {GOAL} in {reached} of {len(rows)} seeds; 'distinct' counts the last "
        f"{WINDOW} trials.")

  if floor_rows:
    expected = SimilarityReward(space, floor=args.floor_report).random_search_expected_trials(GOAL)
    needed = SimilarityReward(space, floor=args.floor_report).matches_needed(GOAL)
    print(f"\nFloor {args.floor_report}: reward = {args.floor_report} + "
          f"{1 - args.floor_report:.2f} * fraction; goal >= {GOAL} (>= {needed} right); "
          f"trials until first reached")
    print(f"{'seed':>4} | {'PPO':>6} | {'random, exact expectation':>25}")
    print("-" * 42)
    for seed, hit, _ in floor_rows:
      print(f"{seed:>4} | {_fmt(hit):>6} | {expected:>25.0f}")
    ppo_mean = np.mean([h if h else args.floor_max_trials for _, h, _ in floor_rows])
    print(f"mean | {ppo_mean:>6.0f} | {expected:>25.0f}   PPO / random: {ppo_mean / expected:.3f}")
  print(f"\ntotal time {time.time() - start:.0f} s")


def oneshot_like_report(space: SearchSpace, args, options: dict) -> None:
  """Report 3: PPO (and random search) on `OneShotLikeReward`, `args.trials` trials per seed."""
  start = time.time()
  with tempfile.TemporaryDirectory(prefix="nasfpn_search_bench_") as root:
    for seed in range(args.first_seed, args.first_seed + args.seeds):
      reward = OneShotLikeReward(space, seed=seed)
      algorithms = ("ppo",) if args.skip_random else ("ppo", "random")
      for algorithm in algorithms:
        t0 = time.time()
        trials = run(reward, algorithm, seed, args.trials,
                     os.path.join(root, f"{algorithm}-{seed}"),
                     **(options if algorithm == "ppo" else {}))
        print(f"oneshot_like seed {seed} {algorithm}: {oneshot_like_summary(trials)} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if seed == args.first_seed and args.plot and algorithm == "ppo":
          plot([("PPO", trials)], args.batch_size, args.plot,
               f"one-shot-like reward (seed 0); PPO options {options['ppo'] or 'default'}")
  print(f"'distinct' and 'top_share' count the last {WINDOW} trials; "
        f"total time {time.time() - start:.0f} s")


def _fmt(v) -> str:
  return "-" if v is None else str(v)


if __name__ == "__main__":
  main()
