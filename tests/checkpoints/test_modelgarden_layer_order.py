"""Model Garden's NAS-FPN checkpoint order, against the order tf-models-official 2.20 has.

The expected orders were read from Model Garden itself (reference venv, `NASFPN.layers`
filtered to layers with weights, named by creation: the input projections first, then the
cells) for ResNet-18 (C4 has 256 channels, so P4 has no projection) with 1, 2 and 5 repeats
and ResNet-50 with 1 and 7 repeats. In all five, the P5 projection comes first, then P4's,
the first two cells, the P3 projection, and the remaining cells in order; each conv just
before its batch norm.
"""

import pytest

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.modelgarden_layer_order import modelgarden_nasfpn_units


def _expected(projected: list[int], repeats: int) -> list[tuple]:
  def unit(*u):
    return [(*u, "conv"), (*u, "bn")]
  cells = [("cell", r, k) for r in range(repeats) for k in range(7)]
  order = []
  for level in (5, 4):
    if level in projected:
      order += unit("input", level)
  order += unit(*cells[0]) + unit(*cells[1]) + unit("input", 3)
  for c in cells[2:]:
    order += unit(*c)
  return order


@pytest.mark.parametrize("projected,repeats", [([3, 5], 1), ([3, 5], 2), ([3, 5], 5),
                                               ([3, 4, 5], 1), ([3, 4, 5], 7)])
def test_order_matches_tf_models_official(projected, repeats):
  units = modelgarden_nasfpn_units(parse_spec("nasfpn"), repeats, projected, [3, 4, 5])
  assert units == _expected(projected, repeats)


def test_deep_decoders_do_not_hit_the_recursion_limit():
  units = modelgarden_nasfpn_units(parse_spec("nasfpn"), 40, [3, 4, 5], [3, 4, 5])
  assert len(units) == 2 * (3 + 7 * 40)
