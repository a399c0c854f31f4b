"""What a search leaves to look at: best specs as YAML, a progress plot, a drawing.

All files are written through `nasfpn_tf.file_io` (a temporary name, then a
rename), so a reader (or a kill) never sees half a file. The plot follows the
paper's search figure: the reward of every trial, its moving average, and the
number of unique architectures sampled so far, against the trial number; beside
the latter, the distinct architectures among the last 200 trials, which falls as
the controller converges (the cumulative count only flattens).
"""

from __future__ import annotations

import io
import logging
import os
from typing import Optional, Sequence

import numpy as np

from nasfpn_tf.search.journal import TrialRecord

logger = logging.getLogger(__name__)


def atomic_write_text(path: str, text: str) -> None:
  from nasfpn_tf import file_io  # local: file_io imports TensorFlow
  file_io.write_text(path, text)


def best_trials(records: Sequence[TrialRecord], k: int) -> list[TrialRecord]:
  """The `k` best successful trials, one per distinct architecture (its first, best run)."""
  ranked = sorted((r for r in records if r.ok), key=lambda r: (-r.reward, r.trial))
  best, seen = [], set()
  for r in ranked:
    if r.spec_string not in seen:
      seen.add(r.spec_string)
      best.append(r)
    if len(best) == k:
      break
  return best


def write_ranked_specs(ranked: Sequence[tuple], directory: str) -> list[str]:
  """Writes `best_1.yaml`.. for `(spec, reward, what)` rows in rank order (loadable by
  `parse_spec`, usable as `task.model.decoder.spec`)."""
  paths = []
  for rank, (spec, reward, what) in enumerate(ranked, start=1):
    header = (f"# NAS-FPN search: rank {rank}, {what} {reward:.6g}\n"
              f"# {spec.to_string()}\n")
    path = os.path.join(directory, f"best_{rank}.yaml")
    atomic_write_text(path, header + spec.to_yaml())
    paths.append(path)
  return paths


def write_best_specs(records: Sequence[TrialRecord], directory: str, k: int) -> list[str]:
  """Writes `best_1.yaml`.. for the `k` best trials of a journal."""
  return write_ranked_specs([(r.spec, r.reward, f"trial {r.trial}, reward")
                             for r in best_trials(records, k)], directory)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
  """Mean of the last `window` values at every position (fewer at the start)."""
  values = np.asarray(values, dtype=np.float64)
  if values.size == 0:
    return values
  csum = np.concatenate([[0.0], np.cumsum(values)])
  idx = np.arange(1, values.size + 1)
  start = np.maximum(idx - window, 0)
  return (csum[idx] - csum[start]) / (idx - start)


def unique_counts(records: Sequence[TrialRecord]) -> np.ndarray:
  """Number of distinct architectures among the first n trials, for every n."""
  seen, counts = set(), []
  for r in records:
    seen.add(r.spec_string)
    counts.append(len(seen))
  return np.asarray(counts)


def distinct_in_window(records: Sequence[TrialRecord], window: int) -> np.ndarray:
  """Number of distinct architectures among the last `window` trials (fewer at the
  start), for every trial."""
  names = [r.spec_string for r in records]
  counts: dict[str, int] = {}
  out = []
  for i, name in enumerate(names):
    counts[name] = counts.get(name, 0) + 1
    if i >= window:
      old = names[i - window]
      counts[old] -= 1
      if not counts[old]:
        del counts[old]
    out.append(len(counts))
  return np.asarray(out)


DISTINCT_WINDOW = 200


def plot_progress(records: Sequence[TrialRecord], path: str, window: Optional[int] = None) -> None:
  """Reward per trial, its moving average and unique architectures, as a PNG."""
  # The object API with the Agg canvas leaves pyplot's global backend alone.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  trials = np.asarray([r.trial + 1 for r in records])
  ok = [r for r in records if r.ok]
  window = window or max(10, len(records) // 50)
  fig = Figure(figsize=(8, 4.5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  if ok:
    ok_trials = np.asarray([r.trial + 1 for r in ok])
    rewards = np.asarray([r.reward for r in ok])
    ax.scatter(ok_trials, rewards, s=4, alpha=0.35, color="tab:blue", label="reward")
    ax.plot(ok_trials, moving_average(rewards, window), color="tab:blue", linewidth=2,
            label=f"moving average ({window})")
  failed = [r.trial + 1 for r in records if not r.ok]
  if failed:
    ymin = min((r.reward for r in ok), default=0.0)
    ax.scatter(failed, [ymin] * len(failed), marker="x", color="tab:red", s=12, label="failed")
  ax.set_xlabel("trial")
  ax.set_ylabel("reward")
  ax2 = ax.twinx()
  if len(records):
    ax2.plot(trials, unique_counts(records), color="tab:orange", label="unique architectures")
    ax2.plot(trials, distinct_in_window(records, DISTINCT_WINDOW), color="tab:green",
             label=f"distinct in the last {DISTINCT_WINDOW} trials")
  ax2.set_ylabel("unique architectures")
  handles = ax.get_legend_handles_labels()
  handles2 = ax2.get_legend_handles_labels()
  ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="center right", fontsize=8)
  ax.set_title(f"architecture search: {len(records)} trials")
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png")
  from nasfpn_tf import file_io
  file_io.write_bytes(path, png.getvalue())


def draw_best(records: Sequence[TrialRecord], path: str) -> Optional[str]:
  """Draws the best architecture with `nasfpn_tf.visualize.draw_architecture`, if available."""
  best = best_trials(records, 1)
  if not best:
    return None
  try:
    from nasfpn_tf.visualize import draw_architecture
  except ImportError:
    logger.info("nasfpn_tf.visualize.draw_architecture is not available; no drawing")
    return None
  try:
    return draw_architecture(best[0].spec, path)   # written through file_io
  except Exception as e:   # a drawing problem must not fail a finished search
    logger.warning("drawing the best architecture failed: %s", e)
    return None


def write_reports(records: Sequence[TrialRecord], directory: str,
                  num_best: int) -> dict[str, object]:
  """Best specs, progress plot and drawing; returns the written paths."""
  if not records:
    return {}
  out: dict[str, object] = {"best_specs": write_best_specs(records, directory, num_best)}
  plot_path = os.path.join(directory, "search_progress.png")
  plot_progress(records, plot_path)
  out["plot"] = plot_path
  out["drawing"] = draw_best(records, os.path.join(directory, "best_architecture.png"))
  return out
