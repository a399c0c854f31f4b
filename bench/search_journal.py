"""A search's course from its journal: reward, distinct architectures, time per window.

Reads `SEARCH_DIR/trials.jsonl` (numpy and json only: runs beside a search in
progress) and prints, per window of trials, the mean and best reward, the
distinct architectures in the window, the cumulative distinct count, how many
trials were first seen (scored) rather than repeats, and the wall time; then
the best architecture and the totals. The numbers of the README's one-shot
search section come from it:

  python bench/search_journal.py runs/oneshot/search --window 250
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nasfpn_tf.search.journal import read_journal  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("search_dir", help="a search directory (holds trials.jsonl)")
  parser.add_argument("--window", type=int, default=250, help="trials per row")
  args = parser.parse_args()
  path = os.path.join(args.search_dir, "trials.jsonl")
  records = [r for r in read_journal(path) if r.ok]
  if not records:
    sys.exit(f"{path}: no finished trials")
  seen: set[str] = set()
  first = []
  for r in records:
    first.append(r.spec_string not in seen)
    seen.add(r.spec_string)
  print(f"{'trials':>11} | {'mean':>6} | {'best':>6} | {'distinct':>8} | {'cumulative':>10} | "
        f"{'scored':>6} | {'wall time':>9}")
  cumulative: set[str] = set()
  for lo in range(0, len(records), args.window):
    window = records[lo:lo + args.window]
    rewards = [r.reward for r in window]
    names = {r.spec_string for r in window}
    cumulative |= names
    wall = window[-1].end_time - window[0].start_time
    print(f"{lo:>5}-{lo + len(window) - 1:<5} | {np.mean(rewards):.4f} | {max(rewards):.4f} | "
          f"{len(names):>8} | {len(cumulative):>10} | {sum(first[lo:lo + len(window)]):>6} | "
          f"{wall / 60:>7.1f} m")
  best = max(records, key=lambda r: (r.reward, -r.trial))
  last = {r.spec_string for r in records[-200:]}
  times = np.array([r.wall_time_s for r in records])
  scored = np.array(first)
  total = records[-1].end_time - records[0].start_time
  print(f"\n{len(records)} trials, {len(seen)} distinct architectures, {len(last)} distinct in "
        f"the last 200; best {best.reward:.4f} (trial {best.trial}): {best.spec_string}")
  print(f"wall time {total / 60:.1f} min (first start to last end); per trial: "
        f"{times[scored].mean():.2f} s first seen ({scored.sum()}), "
        f"{times[~scored].mean() if (~scored).any() else float('nan'):.3f} s repeated "
        f"({(~scored).sum()})")


if __name__ == "__main__":
  main()
