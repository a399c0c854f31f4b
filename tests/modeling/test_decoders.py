import keras
import numpy as np
import pytest

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.modeling.decoders.fpn import FPN
from nasfpn_tf.modeling.decoders.nasfpn import NasFpn, cell_input_plan
from tests.layer_harness import check_layer

CUSTOM = "P5:gp:2,0 P3:sum:0,5:out P4:sum:1,6:out P5:gp:6,2:out P6:sum:3,8:out P7:gp:4,9:out"


def _features(batch=2, size=128, widths=(8, 12, 16)):
  rng = np.random.default_rng(0)
  return {f"P{l}": rng.normal(size=(batch, size // 2**l, size // 2**l, w)).astype(np.float32)
          for l, w in zip((3, 4, 5), widths)}


def test_nasfpn_harness_with_a_custom_spec():
  kwargs = dict(spec=CUSTOM, filters=8, num_repeats=2, min_level=3, max_level=7,
                global_pool_type="avg", use_dropblock=True, dropblock_size=3,
                dropblock_keep_prob=0.9, norm_momentum=0.99, norm_epsilon=1e-3,
                use_sync_bn=False)
  spec = parse_spec(CUSTOM)
  expected = {"spec": {"cells": spec.to_records(), "min_level": 3, "max_level": 7}}
  layer = check_layer(NasFpn, kwargs, _features(), expected_config=expected)
  out = layer(_features())
  assert {k: v.shape for k, v in out.items()} == {
      "P3": (2, 16, 16, 8), "P4": (2, 8, 8, 8), "P5": (2, 4, 4, 8), "P6": (2, 2, 2, 8),
      "P7": (2, 1, 1, 8)}
  # A searched spec must reload as itself, never as the published cell.
  clone = NasFpn.from_config(layer.get_config())
  assert clone.spec == spec


def test_fpn_harness():
  kwargs = dict(min_level=3, max_level=7, filters=8, norm_momentum=0.99, norm_epsilon=1e-3,
                use_sync_bn=False)
  layer = check_layer(FPN, kwargs, _features())
  assert layer(_features())["P7"].shape == (2, 1, 1, 8)


def test_output_rule_plan_for_the_published_cell():
  plan = cell_input_plan(parse_spec("nasfpn"))
  # Cell 9 (P5 output) absorbs the unconsumed P5 input (2); cell 10 (P7) the P7 input (4).
  assert plan == [[1, 3], [1, 5], [0, 6], [6, 7], [7, 8, 2], [6, 9, 4], [9, 10]]


def test_nasfpn_spec_as_fpn_runs_top_down():
  # Inputs must be multiples of 2**max_level (the config enforces it): 128 here.
  out = NasFpn("fpn", filters=4, num_repeats=1)(_features(1, size=128))
  assert out["P3"].shape == (1, 16, 16, 4) and out["P7"].shape == (1, 1, 1, 4)


@pytest.mark.parametrize("decoder, expected_all, expected_trainable", [
    (lambda: NasFpn("nasfpn", filters=256, num_repeats=7), 29_885_440, 29_858_816),
    (lambda: FPN(3, 7, filters=256), 3_873_792, 3_871_232),
])
def test_model_garden_decoder_parameter_counts(decoder, expected_all, expected_trainable):
  layer = decoder()
  layer({"P3": keras.Input((80, 80, 512)), "P4": keras.Input((40, 40, 1024)),
         "P5": keras.Input((20, 20, 2048))})
  # Model Garden's reported counts include batch-norm moving statistics.
  assert sum(int(np.prod(w.shape)) for w in layer.weights) == expected_all
  assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected_trainable


def test_bad_spec_fails_at_construction():
  from nasfpn_tf.architecture_spec import SpecError
  with pytest.raises(SpecError, match="cell 0: first input index 9"):
    NasFpn("P3:sum:9,0:out P4:sum:0,1:out P5:sum:0,1:out P6:sum:0,1:out P7:sum:0,1:out")
