"""The order in which Model Garden's NAS-FPN decoder stores its layers in a checkpoint.

Model Garden's `NASFPN` is a tf-keras functional model, so an object-based checkpoint names
its weights by position: `decoder/layer_with_weights-K/...`, K counting the layers that have
weights in the order of `Functional.layers`. tf-keras orders those layers by their depth in
the graph (longest path to an output, deepest first) and breaks ties by the order a
depth-first walk from the outputs meets them (`functional._map_graph_network`); that order is
neither the order the layers were created in nor ours (for a ResNet-50 the P5 projection
comes first, then P4, the first two cells, the P3 projection and the other cells).

No checkpoint records the layer names, so `modelgarden_nasfpn_units` rebuilds the
order: it traces the graph Model Garden's `NASFPN.__init__` builds (every tf op it applies to
a Keras tensor becomes a layer there: the resampling, the merge, the ReLU) as plain nodes and
applies tf-keras' ordering rule to it. tests/checkpoints/test_modelgarden_layer_order.py holds
the orders read from tf-models-official 2.20 itself, and the import test compares outputs.
Written here (rather than imported) because tf-keras is not a dependency of nasfpn_tf.
"""

from __future__ import annotations

from typing import Optional, Sequence

from nasfpn_tf.architecture_spec import ArchitectureSpec


class _Graph:
  """A Keras functional graph reduced to what ordering needs: one node per layer call."""

  def __init__(self):
    self.parents: list[list[int]] = []
    self.units: list[Optional[tuple]] = []  # what a weighted node is in our model, else None

  def node(self, parents: Sequence[int], unit: Optional[tuple] = None) -> int:
    self.parents.append(list(parents))
    self.units.append(unit)
    return len(self.parents) - 1

  def ordered_units(self, outputs: Sequence[int]) -> list[tuple]:
    """Weighted nodes in tf-keras' `Functional.layers` order (one layer per node here)."""
    order: dict[int, int] = {}  # first visit (pre-order), tf-keras' `layer_indices`
    finished: list[int] = []  # post-order, tf-keras' `nodes_in_decreasing_depth`
    done: set[int] = set()

    # tf-keras' recursive walk, with an explicit stack: deep decoders exceed Python's
    # recursion limit. A frame is (node, index of the next parent to visit).
    for out in outputs:
      stack = [(out, 0)]
      while stack:
        n, i = stack.pop()
        if i == 0:
          if n in done:
            continue
          order.setdefault(n, len(order))
        if i < len(self.parents[n]):
          stack.append((n, i + 1))
          stack.append((self.parents[n][i], 0))
        else:
          done.add(n)
          finished.append(n)
    depth: dict[int, int] = {}
    for n in reversed(finished):
      d = depth.setdefault(n, 0)
      for p in self.parents[n]:
        depth[p] = max(depth.get(p, 0), d + 1)
    ranked = sorted(finished, key=lambda n: (-depth[n], order[n]))
    return [self.units[n] for n in ranked if self.units[n] is not None]


def _resample(g: _Graph, x: int, source: int, target: int) -> int:
  """Model Garden's `_resample_feature_map` between equal widths: max pooling, or
  `spatial_transform_ops.nearest_upsampling` (shape, two slices, reshape, tile, two
  multiplies, reshape)."""
  if source < target:
    return g.node([x])
  if source > target:
    shape = g.node([x])
    h, w = g.node([shape]), g.node([shape])
    tiled = g.node([g.node([x, h, w])])
    return g.node([tiled, g.node([h]), g.node([w])])
  return x


def modelgarden_nasfpn_units(spec: ArchitectureSpec, num_repeats: int,
                             projected_levels: Sequence[int],
                             backbone_levels: Sequence[int]) -> list[tuple]:
  """Our decoder's conv / batch-norm units in Model Garden's `layer_with_weights` order.

  Args:
    spec: the cell spec (Model Garden only builds the published one).
    num_repeats: stacked repeats.
    projected_levels: levels whose input gets a 1x1 conv + BN (backbone width != filters).
    backbone_levels: levels the backbone provides; the levels above are max-pooled.

  Returns:
    Units ("input", level, "conv" | "bn") and ("cell", repeat, k, "conv" | "bn").
  """
  g = _Graph()
  feats, previous = [], None
  levels = list(range(spec.min_level, spec.max_level + 1))
  for level in levels:
    if level in backbone_levels:
      x = g.node([])  # keras.Input
      if level in projected_levels:
        x = g.node([g.node([x], ("input", level, "conv"))], ("input", level, "bn"))
    else:
      x = _resample(g, previous, level - 1, level)
    feats.append(x)
    previous = x
  for r in range(num_repeats):
    pool, pool_levels, consumed = list(feats), list(levels), [0] * len(feats)
    for k, cell in enumerate(spec.cells):
      i0, i1 = cell.inputs
      consumed[i0] += 1
      node0 = _resample(g, pool[i0], pool_levels[i0], cell.level)
      consumed[i1] += 1
      node1 = _resample(g, pool[i1], pool_levels[i1], cell.level)
      if cell.op == "sum":
        x = g.node([node0, node1])
      else:  # a + b * sigmoid(reduce_max(a)), `a` the coarser input (ties: the first)
        a, b = (node0, node1) if pool_levels[i0] >= pool_levels[i1] else (node1, node0)
        gate = g.node([g.node([a])])
        x = g.node([a, g.node([b, gate])])
      if cell.is_output:
        for j in range(len(pool)):
          if consumed[j] == 0 and pool_levels[j] == cell.level:
            consumed[j] += 1
            x = g.node([x, pool[j]])
      x = g.node([x])  # ReLU
      x = g.node([g.node([x], ("cell", r, k, "conv"))], ("cell", r, k, "bn"))
      pool.append(x)
      pool_levels.append(cell.level)
      consumed.append(0)
    # The last cell of each level is that level's output (Model Garden keeps the last).
    last = {lvl: pool[i] for i, lvl in enumerate(pool_levels) if i >= len(pool) - len(levels)}
    feats = [last[lvl] for lvl in levels]
  return g.ordered_units(feats)  # outputs flattened in key order "3" < "4" < ... < "7"
