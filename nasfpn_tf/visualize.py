"""Pictures a person would rather look at than read: architectures and detections.

`draw_architecture` draws a merging-cell spec in the spirit of the paper's
figures: one row per pyramid level, inputs on the left, cells left to right in
build order, outputs on the right. `draw_detections` draws boxes on an image.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from nasfpn_tf.architecture_spec import ArchitectureSpec, parse_spec  # noqa: E402

_OP_STYLE = {"sum": ("o", "#4C72B0", "sum"), "global_pool": ("s", "#DD8452", "global pooling")}


def save_figure_atomic(fig, path: str, dpi: int = 120) -> None:
  """Saves a figure to a temp name, then renames: a killed job never leaves half a PNG."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
  plt.close(fig)
  os.replace(tmp, path)


def _node_positions(spec: ArchitectureSpec) -> list[tuple[float, float]]:
  """(x, y) of every pool entry: inputs at x=0, cell k at x=k+1; y = level."""
  positions = [(0.0, float(level)) for level in range(spec.min_level, spec.max_level + 1)]
  positions += [(float(k + 1), float(cell.level)) for k, cell in enumerate(spec.cells)]
  return positions


def _edge(ax, start, end, color: str, style: str = "-") -> None:
  # Curve edges that skip columns so they don't hide behind intermediate nodes.
  rad = 0.25 if abs(end[0] - start[0]) > 1 else 0.0
  ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=color,
                               linestyle=style, lw=1.0, alpha=0.8,
                               connectionstyle=f"arc3,rad={rad}", shrinkA=7, shrinkB=7))


def draw_architecture(spec: ArchitectureSpec | str, path: str,
                      title: Optional[str] = None) -> str:
  """Writes a PNG of `spec` (anything `parse_spec` accepts) to `path`; returns `path`.

  Circles are sum cells, squares global-pooling cells, outlined nodes are outputs;
  dashed edges are the paper's output rule (unconsumed same-level maps summed in).
  """
  from nasfpn_tf.modeling.decoders.nasfpn import cell_input_plan  # lazy: pulls in Keras

  spec = spec if isinstance(spec, ArchitectureSpec) else parse_spec(spec)
  positions = _node_positions(spec)
  out_x = len(spec.cells) + 1.5
  fig, ax = plt.subplots(figsize=(2.0 + 0.9 * len(spec.cells), 1.0 + 0.8 * spec.num_inputs))
  for x, y in positions[:spec.num_inputs]:
    ax.scatter([x], [y], marker="o", s=260, color="#8C8C8C", zorder=3)
  for k, (cell, indices) in enumerate(zip(spec.cells, cell_input_plan(spec))):
    x, y = positions[spec.num_inputs + k]
    marker, color, _ = _OP_STYLE[cell.op]
    for j, i in enumerate(indices):
      _edge(ax, positions[i], (x, y), color if j < 2 else "#555555", "-" if j < 2 else "--")
    ax.scatter([x], [y], marker=marker, s=260, color=color, zorder=3,
               edgecolors="black" if cell.is_output else color, linewidths=2)
    ax.annotate(str(spec.num_inputs + k), (x, y), ha="center", va="center", fontsize=7,
                color="white", zorder=4)
    if cell.is_output:
      _edge(ax, (x, y), (out_x, y), "black", ":")
  for level in range(spec.min_level, spec.max_level + 1):
    ax.annotate(f"P{level} out", (out_x, level), xytext=(4, -4), textcoords="offset points")
  handles = [Line2D([], [], marker=m, color=c, linestyle="", markersize=10, label=label)
             for m, c, label in _OP_STYLE.values()]
  handles.append(Line2D([], [], color="#555555", linestyle="--", label="unconsumed input added"))
  ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3,
            frameon=False, fontsize=8)
  ax.set_xlim(-0.8, out_x + 1.0)
  ax.set_ylim(spec.min_level - 0.7, spec.max_level + 0.7)
  ax.set_yticks(range(spec.min_level, spec.max_level + 1))
  ax.set_yticklabels([f"P{l}" for l in range(spec.min_level, spec.max_level + 1)])
  ax.set_xticks([])
  ax.invert_yaxis()  # fine levels on top, as in the paper's figures
  ax.set_title(title or spec.to_string(), fontsize=8)
  save_figure_atomic(fig, path)
  return path


def draw_detections(image: np.ndarray, detections: Mapping[str, np.ndarray], path: str,
                    category_names: Optional[Mapping[int, str]] = None,
                    min_score: float = 0.3,
                    ground_truth: Optional[Sequence[Sequence[float]]] = None) -> str:
  """Draws one image's detections (ymin, xmin, ymax, xmax pixels) above `min_score`;
  optional ground-truth boxes in dashed white. Returns `path`."""
  fig, ax = plt.subplots(figsize=(5, 5 * image.shape[0] / image.shape[1]))
  ax.imshow(image.astype(np.uint8))
  for box in ground_truth if ground_truth is not None else []:
    ymin, xmin, ymax, xmax = box
    ax.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False,
                               color="white", linestyle="--", lw=1))
  n = int(detections["num_detections"])
  colors = plt.get_cmap("tab10")
  for box, score, cls in zip(detections["detection_boxes"][:n], detections["detection_scores"][:n],
                             detections["detection_classes"][:n]):
    if score < min_score:
      continue
    ymin, xmin, ymax, xmax = box
    color = colors(int(cls) % 10)
    ax.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, color=color,
                               lw=2))
    name = (category_names or {}).get(int(cls), str(int(cls)))
    ax.text(xmin, ymin - 2, f"{name} {score:.2f}", color="white", fontsize=7,
            bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "lw": 0})
  ax.axis("off")
  save_figure_atomic(fig, path)
  return path
