"""A proxy validation's report as the README's two tables: per architecture, then per reward.

Reads `proxy_validation.json` (written by `run.py --mode=validate_proxy` after every stage,
so a validation in progress can be read too) and prints, as markdown:
  1. each architecture's value per seed for every reward (one-shot AP, stand-alone proxy AP,
     full-budget AP), ranked by the full budget's mean;
  2. each reward's mean spread over seeds (max - min, averaged over architectures) and its
     Kendall tau / Spearman rho against the full budget's mean AP, with the number of
     architectures they are computed on, its tau over the better half by full AP and over
     the architectures every reward scores, and the tau of each seed alone against the
     full mean; for the full budget, the tau between its seeds (the ceiling for any proxy).

  python bench/proxy_validation_table.py runs/pv/proxy_validation.json
"""

from __future__ import annotations

import argparse
import json
import sys


def _cell(values: list) -> str:
  got = [v for v in values if v is not None]
  if not values:
    return ""
  if not got:
    return "n/a"
  text = " / ".join(f"{v:.3f}" for v in got)
  return f"{text} (mean {sum(got) / len(got):.3f})" if len(got) > 1 else text


def _fmt(value, spec: str = ".3f") -> str:
  return "-" if value is None else format(value, spec)


def _tau_n(c) -> str:
  return f"{_fmt(c.get('kendall_tau'), '.2f')} ({c['n']})" if c else "-"


def architecture_table(report: dict) -> str:
  rewards = list(report["scores"])
  full = report["summary"].get("full", {}).get("mean", {})
  names = sorted(report["architectures"], key=lambda a: -full.get(a, -1.0))
  lines = ["| architecture | " + " | ".join(f"{r} AP per seed" for r in rewards) + " |",
           "|---|" + "---|" * len(rewards)]
  for a in names:
    lines.append(f"| {a} | " + " | ".join(_cell(report["scores"][r][a]) for r in rewards)
                 + " |")
  return "\n".join(lines)


def reward_table(report: dict) -> str:
  lines = ["| reward | mean spread over seeds | architectures with >= 2 seeds | "
           "Kendall tau vs full | Spearman rho vs full | n | Kendall tau, best half (n) | "
           "Kendall tau, what every reward scores (n) | Kendall tau of each seed |",
           "|---|---|---|---|---|---|---|---|---|"]
  for reward, s in report["summary"].items():
    c = s.get("vs_full") or {}
    if "seed_to_seed_tau" in s:  # full against itself: the ceiling for any proxy
      by_seed = "seed vs seed: " + (" / ".join(_fmt(t, ".2f") for t in s["seed_to_seed_tau"])
                                    or "-")
    else:
      by_seed = " / ".join(_fmt(t, ".2f") for t in s.get("vs_full_by_seed", [])) or "-"
    lines.append(f"| {reward} | {_fmt(s['mean_spread'])} | {len(s['spread'])} | "
                 f"{_fmt(c.get('kendall_tau'), '.2f')} | {_fmt(c.get('spearman_rho'), '.2f')} | "
                 f"{c.get('n', '-')} | {_tau_n(s.get('vs_full_top_half'))} | "
                 f"{_tau_n(s.get('vs_full_common'))} | {by_seed} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("report", help="a proxy_validation.json")
  args = parser.parse_args()
  try:
    with open(args.report) as f:
      report = json.load(f)
  except (OSError, ValueError) as e:
    sys.exit(f"{args.report}: {e}")
  print(f"stages done: {', '.join(report.get('done', [])) or 'all (older report)'}\n")
  print(architecture_table(report) + "\n")
  print(reward_table(report))


if __name__ == "__main__":
  main()
