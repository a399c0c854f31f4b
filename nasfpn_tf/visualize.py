"""Pictures a person would rather look at than read: architectures and detections.

`draw_architecture` draws a merging-cell spec in the spirit of the paper's
figures: one row per pyramid level, inputs on the left, cells left to right in
build order, outputs on the right. `draw_detections` draws boxes on an image.
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from nasfpn_tf import file_io  # noqa: E402
from nasfpn_tf.architecture_spec import (ArchitectureSpec, cell_input_plan,  # noqa: E402
                                         parse_spec)

_OP_STYLE = {"sum": ("o", "#4C72B0", "sum"), "global_pool": ("s", "#DD8452", "global pooling")}
_IO_COLOR = "#8C8C8C"
_EXTRA_COLOR = "#555555"


def save_figure_atomic(fig, path: str, dpi: int = 120) -> None:
  """Saves a figure as PNG through `file_io` (temp name, then rename; any filesystem): a
  killed job never leaves half a PNG. Creates the folder."""
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, bbox_inches="tight", format="png")
  plt.close(fig)
  folder = os.path.dirname(path)
  if folder:
    file_io.makedirs(folder)
  file_io.write_bytes(path, buffer.getvalue())


def _node_positions(spec: ArchitectureSpec) -> list[tuple[float, float]]:
  """(x, y) of every pool entry: inputs at x=0, cell k at x=k+1; y = level."""
  positions = [(0.0, float(level)) for level in range(spec.min_level, spec.max_level + 1)]
  positions += [(float(k + 1), float(cell.level)) for k, cell in enumerate(spec.cells)]
  return positions


def _edge(ax, start, end, color: str, style: str = "-", rad: Optional[float] = None) -> None:
  # Curve edges that skip columns so they don't hide behind intermediate nodes.
  if rad is None:
    rad = 0.25 if abs(end[0] - start[0]) > 1 else 0.0
  ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=color,
                               linestyle=style, lw=1.0, alpha=0.8,
                               connectionstyle=f"arc3,rad={rad}", shrinkA=8, shrinkB=8))


def draw_architecture(spec: ArchitectureSpec | str, path: str,
                      title: Optional[str] = None) -> str:
  """Writes a PNG of `spec` (anything `parse_spec` accepts) to `path`; returns `path`.

  One row per pyramid level (fine levels on top), input nodes on the left, cells
  left to right in build order, output nodes on the right. Circles are sum cells,
  squares global-pooling cells, thick black outlines mark output cells; solid edges
  are a cell's two inputs, dashed grey edges the paper's output rule (unconsumed
  same-level maps summed in), dotted edges lead to the outputs. Written to a temp
  name, then renamed.
  """
  spec = spec if isinstance(spec, ArchitectureSpec) else parse_spec(spec)
  positions = _node_positions(spec)
  out_x = len(spec.cells) + 1.5
  fig, ax = plt.subplots(figsize=(2.5 + 0.9 * len(spec.cells), 1.2 + 0.8 * spec.num_inputs))
  for i, (x, y) in enumerate(positions[:spec.num_inputs]):
    ax.scatter([x], [y], marker="o", s=300, color=_IO_COLOR, zorder=3)
    ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=7, color="white", zorder=4)
  for k, (cell, indices) in enumerate(zip(spec.cells, cell_input_plan(spec))):
    x, y = positions[spec.num_inputs + k]
    marker, color, _ = _OP_STYLE[cell.op]
    for j, i in enumerate(indices):
      if j < 2:
        _edge(ax, positions[i], (x, y), color, "-")
      else:  # bend the other way so it is told apart from the cell's own inputs
        _edge(ax, positions[i], (x, y), _EXTRA_COLOR, "--", rad=-0.3)
    ax.scatter([x], [y], marker=marker, s=300, color=color, zorder=3,
               edgecolors="black" if cell.is_output else color, linewidths=2.5)
    ax.annotate(str(spec.num_inputs + k), (x, y), ha="center", va="center", fontsize=7,
                color="white", zorder=4)
    if cell.is_output:
      _edge(ax, (x, y), (out_x, y), "black", ":", rad=0.0)
  for level in range(spec.min_level, spec.max_level + 1):
    ax.scatter([out_x], [level], marker="D", s=200, color=_IO_COLOR, zorder=3)
    ax.annotate(f"P{level} out", (out_x, level), xytext=(12, -3), textcoords="offset points",
                fontsize=8)
  handles = [Line2D([], [], marker=m, color=c, linestyle="", markersize=10, label=label)
             for m, c, label in _OP_STYLE.values()]
  handles += [
      Line2D([], [], marker="o", color="white", markeredgecolor="black", markeredgewidth=2,
             linestyle="", markersize=10, label="output cell"),
      Line2D([], [], marker="o", color=_IO_COLOR, linestyle="", markersize=10,
             label="input / output level"),
      Line2D([], [], color=_EXTRA_COLOR, linestyle="--", label="unconsumed input added"),
  ]
  ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3,
            frameon=False, fontsize=8)
  ax.set_xlim(-0.8, out_x + 1.2)
  ax.set_ylim(spec.min_level - 0.7, spec.max_level + 0.7)
  ax.set_yticks(range(spec.min_level, spec.max_level + 1))
  ax.set_yticklabels([f"P{l}" for l in range(spec.min_level, spec.max_level + 1)])
  ax.set_xticks([0] + [k + 1 for k in range(len(spec.cells))] + [out_x])
  ax.set_xticklabels(["inputs"] + [f"cell {k}" for k in range(len(spec.cells))] + ["outputs"],
                     fontsize=7)
  ax.invert_yaxis()  # fine levels on top, as in the paper's figures
  for side in ("top", "right"):
    ax.spines[side].set_visible(False)
  ax.set_title(title or spec.to_string(), fontsize=9)
  save_figure_atomic(fig, path)
  return path


def draw_detections(image: np.ndarray, detections: Mapping[str, np.ndarray], path: str,
                    category_names: Optional[Mapping[int, str]] = None,
                    min_score: float = 0.3,
                    ground_truth: Optional[Sequence[Sequence[float]]] = None,
                    title: Optional[str] = None) -> str:
  """Draws one image's detections (ymin, xmin, ymax, xmax pixels) scoring at least
  `min_score`, optional ground-truth boxes dashed, and a legend saying which is which.
  Returns `path`."""
  return draw_detection_grid([image], [detections], path, category_names, min_score,
                             None if ground_truth is None else [ground_truth],
                             titles=None if title is None else [title])


def draw_detection_grid(images: Sequence[np.ndarray],
                        detections: Sequence[Mapping[str, np.ndarray]], path: str,
                        category_names: Optional[Mapping[int, str]] = None,
                        min_score: float = 0.3,
                        ground_truths: Optional[Sequence[Sequence[Sequence[float]]]] = None,
                        columns: int = 3, titles: Optional[Sequence[str]] = None) -> str:
  """Several images with their detections in one PNG, one panel each.

  Predictions scoring at least `min_score` are solid boxes coloured by class, labelled
  "class score" inside their top-left corner (moved down where it would cover another
  label); ground-truth boxes are dashed white with a dark edge. A legend under the panels
  names both, the score threshold and the class colours.

  Args:
    images: uint8 [H, W, 3] images.
    detections: per image, `detection_boxes` (ymin, xmin, ymax, xmax pixels),
      `detection_scores`, `detection_classes`, `num_detections`.
    path: the PNG to write (atomically).
    category_names: class id -> name for the labels (default: the id).
    min_score: predictions below this score are not drawn.
    ground_truths: per image, its true boxes (ymin, xmin, ymax, xmax pixels).
    columns: panels per row.
    titles: per image, a panel title (such as its image id).

  Returns:
    `path`.
  """
  if len(images) != len(detections) or not images:
    raise ValueError(f"need as many detections as images (>= 1), got {len(detections)} "
                     f"for {len(images)}")
  if titles is not None and len(titles) != len(images):
    raise ValueError(f"need as many titles as images, got {len(titles)} for {len(images)}")
  columns = min(columns, len(images))
  rows = -(-len(images) // columns)
  legend_height = 0.8  # inches under the panels for the legend and its title
  # Panels 4 inches wide, and a little taller for their titles.
  fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.35 * rows + legend_height),
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i < len(images):
      _show_image(ax, images[i])
      if titles is not None:
        ax.set_title(titles[i], fontsize=9)
    else:
      ax.axis("off")
  # Lay out first: label collisions are resolved in screen space, which layout changes.
  fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1), h_pad=1.5)
  classes_drawn: set[int] = set()
  for i, ax in enumerate(axes.flat[:len(images)]):
    truth = ground_truths[i] if ground_truths is not None else None
    classes_drawn |= _draw_boxes(ax, detections[i], category_names, min_score, truth)
  handles = []
  if ground_truths is not None:
    handles.append(Line2D([], [], color="white", linestyle="--", lw=1.5,
                          path_effects=_GT_OUTLINE, label="ground truth"))
  handles += [Line2D([], [], color=_class_color(c), lw=2,
                     label=f"predicted {_class_name(c, category_names)}")
              for c in sorted(classes_drawn)]
  fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6) or 1,
             frameon=False, fontsize=9,
             title=f"predictions with score >= {min_score:.2f}, labelled class and score",
             title_fontsize=9)
  save_figure_atomic(fig, path)
  return path


# A thin dark edge keeps the white dashed truth boxes visible on light backgrounds.
_GT_OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="#202020")]


def _class_color(cls: int):
  return plt.get_cmap("tab10")(int(cls) % 10)


def _class_name(cls: int, category_names: Optional[Mapping[int, str]]) -> str:
  return (category_names or {}).get(int(cls), str(int(cls)))


def _overlaps(box, others) -> bool:
  return any(box.x0 < o.x1 and o.x0 < box.x1 and box.y0 < o.y1 and o.y0 < box.y1
             for o in others)


def _show_image(ax, image: np.ndarray) -> None:
  ax.imshow(image.astype(np.uint8))
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xlim(-0.5, image.shape[1] - 0.5)
  ax.set_ylim(image.shape[0] - 0.5, -0.5)


def _draw_boxes(ax, detections: Mapping[str, np.ndarray],
                category_names: Optional[Mapping[int, str]], min_score: float,
                ground_truth: Optional[Sequence[Sequence[float]]]) -> set[int]:
  """Draws one panel's boxes and labels; returns the class ids of the predictions drawn."""
  for box in ground_truth if ground_truth is not None else []:
    ymin, xmin, ymax, xmax = box
    ax.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False,
                               color="white", linestyle="--", lw=1.2, path_effects=_GT_OUTLINE))
  n = int(detections["num_detections"])
  keep = [(box, float(score), int(cls)) for box, score, cls in
          zip(detections["detection_boxes"][:n], detections["detection_scores"][:n],
              detections["detection_classes"][:n]) if score >= min_score]
  renderer = ax.figure.canvas.get_renderer()
  placed = []
  # Highest score first: where labels collide, the likelier detection keeps its place.
  for box, score, cls in sorted(keep, key=lambda d: -d[1]):
    ymin, xmin, ymax, xmax = box
    color = _class_color(cls)
    ax.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, color=color,
                               lw=1.5))
    label = ax.annotate(f"{_class_name(cls, category_names)} {score:.2f}", (xmin, ymin),
                        xytext=(1.5, -1.5), textcoords="offset points", ha="left", va="top",
                        color="white", fontsize=6, clip_on=True,
                        bbox={"facecolor": color, "alpha": 0.85, "pad": 0.8, "lw": 0})
    extent = label.get_window_extent(renderer)
    # Step down one label height at a time until it covers no earlier label.
    for _ in range(8):
      if not _overlaps(extent, placed):
        break
      label.xyann = (label.xyann[0], label.xyann[1] - extent.height * 72 / ax.figure.dpi - 1)
      extent = label.get_window_extent(renderer)
    placed.append(extent)
  return {cls for _, _, cls in keep}
