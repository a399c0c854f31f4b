import json
import warnings

import keras
import numpy as np
import pytest

from nasfpn_tf.architecture_spec import SpecError, parse_spec
from nasfpn_tf.modeling.decoders.fpn import FPN
from nasfpn_tf.modeling.decoders.nasfpn import NasFpn, cell_input_plan
from tests.layer_harness import check_layer

CUSTOM = "P5:gp:2,0 P3:sum:0,5:out P4:sum:1,6:out P5:gp:6,2:out P6:sum:3,8:out P7:gp:4,9:out"
LEVELS = {"P3": (16, 16), "P4": (8, 8), "P5": (4, 4), "P6": (2, 2), "P7": (1, 1)}


def _features(batch=2, size=128, widths=(8, 12, 16)):
  """ResNet-like inputs P3..P5 for a `size` image (other widths than the pyramid's)."""
  rng = np.random.default_rng(0)
  return {f"P{l}": rng.normal(size=(batch, size // 2**l, size // 2**l, w)).astype(np.float32)
          for l, w in zip((3, 4, 5), widths)}


def _symbolic(widths=(512, 1024, 2048), size=640):
  return {f"P{l}": keras.Input((size // 2**l, size // 2**l, w)) for l, w in zip((3, 4, 5), widths)}


def test_nasfpn_harness_with_a_custom_spec():
  kwargs = dict(spec=CUSTOM, filters=8, num_repeats=2, min_level=3, max_level=7,
                global_pool_type="avg", use_dropblock=True, dropblock_size=3,
                dropblock_keep_prob=0.9, norm_momentum=0.99, norm_epsilon=1e-3,
                use_sync_bn=False, kernel_initializer="he_uniform")
  spec = parse_spec(CUSTOM)
  expected = {"spec": {"cells": spec.to_records(), "min_level": 3, "max_level": 7}}
  layer = check_layer(NasFpn, kwargs, _features(), expected_config=expected)
  out = layer(_features())
  assert {k: tuple(v.shape[1:3]) for k, v in out.items()} == LEVELS
  assert all(v.shape[-1] == 8 for v in out.values())
  # A searched spec must reload as itself, never as the published cell.
  clone = NasFpn.from_config(layer.get_config())
  assert clone.spec == spec and clone.spec != parse_spec("nasfpn")


def test_nasfpn_config_is_plain_data_and_round_trips_every_argument():
  layer = NasFpn(CUSTOM, filters=16, num_repeats=3, global_pool_type="avg", use_dropblock=True,
                 dropblock_size=5, dropblock_keep_prob=0.8, norm_momentum=0.9, norm_epsilon=1e-4,
                 use_sync_bn=True, kernel_initializer=keras.initializers.HeNormal(seed=1),
                 name="decoder")
  config = json.loads(json.dumps(layer.get_config()))  # survives JSON
  assert config["spec"]["cells"] == parse_spec(CUSTOM).to_records()
  clone = NasFpn.from_config(config)
  for key in ("filters", "num_repeats", "min_level", "max_level", "global_pool_type",
              "use_dropblock", "dropblock_size", "dropblock_keep_prob", "norm_momentum",
              "norm_epsilon", "use_sync_bn", "name"):
    assert getattr(clone, key) == getattr(layer, key), key
  assert clone.spec == layer.spec
  assert clone.get_config() == layer.get_config()
  assert config["kernel_initializer"]["class_name"] == "HeNormal"


def test_every_spec_spelling_builds_the_same_decoder(tmp_path):
  path = tmp_path / "searched.yaml"
  path.write_text(parse_spec(CUSTOM).to_yaml())
  for value in (CUSTOM, str(path), parse_spec(CUSTOM).to_records(), parse_spec(CUSTOM),
                {"cells": parse_spec(CUSTOM).to_records()}):
    assert NasFpn(value, num_repeats=1).spec == parse_spec(CUSTOM)


def test_fpn_harness():
  kwargs = dict(min_level=3, max_level=7, filters=8, norm_momentum=0.99, norm_epsilon=1e-3,
                use_sync_bn=False, kernel_initializer=None)
  layer = check_layer(FPN, kwargs, _features())
  out = layer(_features())
  assert {k: tuple(v.shape[1:3]) for k, v in out.items()} == LEVELS


@pytest.mark.parametrize("make", [lambda: NasFpn(CUSTOM, filters=8, num_repeats=2,
                                                 use_dropblock=True),
                                  lambda: FPN(filters=8)], ids=["nasfpn", "fpn"])
def test_keras_file_round_trip_of_a_model_holding_the_decoder(make, tmp_path):
  features = _features(batch=2)
  inputs = {k: keras.Input(v.shape[1:], name=k) for k, v in features.items()}
  decoder = make()
  model = keras.Model(inputs, decoder(inputs))
  # Random weights and BN statistics, so nothing matches by sitting at its initial value.
  rng = np.random.default_rng(3)
  model.set_weights([np.abs(rng.normal(1.0, 0.2, w.shape)).astype(np.float32)
                     if "variance" in w.path else rng.normal(0, 0.2, w.shape).astype(np.float32)
                     for w in model.weights])
  before = model(features, training=False)
  path = str(tmp_path / "decoder.keras")
  model.save(path)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loaded = keras.models.load_model(path, compile=False)
  assert not [w for w in caught if "unbuilt" in str(w.message) or "build" in str(w.message)], \
      [str(w.message) for w in caught]
  after = loaded(features, training=False)
  for key in LEVELS:
    np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))
  reloaded = [l for l in loaded.layers if isinstance(l, type(decoder))][0]
  assert reloaded.get_config() == decoder.get_config()
  if isinstance(decoder, NasFpn):
    assert reloaded.spec == parse_spec(CUSTOM)


def test_output_rule_plan_for_the_published_cell():
  plan = cell_input_plan(parse_spec("nasfpn"))
  # Cell 9 (P5 output) absorbs the unconsumed P5 input (2); cell 10 (P7) the P7 input (4).
  assert plan == [[1, 3], [1, 5], [0, 6], [6, 7], [7, 8, 2], [6, 9, 4], [9, 10]]
  decoder = NasFpn("nasfpn", filters=8, num_repeats=1)
  decoder(_features())
  assert [c.input_levels for c, _ in decoder.cells[0]] == [
      [4, 6], [4, 4], [3, 4], [4, 3], [3, 4, 5], [4, 5, 7], [5, 7]]


def test_missing_levels_are_pooled_from_the_level_below():
  # Backbone widths equal to the pyramid's: no projections at all, and P6 / P7 are exactly
  # max-pool(P5) and max-pool(max-pool(P5)).
  features = _features(batch=1, widths=(8, 8, 8))
  decoder = NasFpn("nasfpn", filters=8, num_repeats=1)
  decoder(features)
  assert not any(r.project for r in decoder.input_resamplers.values())
  assert not any(w for r in decoder.input_resamplers.values() for w in r.weights)
  p6 = np.asarray(decoder.input_resamplers["P6"](features["P5"]))
  expected = features["P5"].reshape(1, 2, 2, 2, 2, 8).max(axis=(2, 4))
  np.testing.assert_array_equal(p6, expected)
  # Other widths: P3..P5 get a 1x1 conv + BN; P6 and P7 come from the projected P5.
  wide = NasFpn("nasfpn", filters=4, num_repeats=1)
  wide(_features(batch=1))
  assert [wide.input_resamplers[f"P{l}"].project for l in range(3, 8)] == [True] * 3 + [False] * 2
  assert [(r.source_level, r.target_level) for r in wide.input_resamplers.values()] == [
      (3, 3), (4, 4), (5, 5), (5, 6), (6, 7)]


def test_repeats_share_no_weights_and_feed_each_other():
  decoder = NasFpn("nasfpn", filters=8, num_repeats=3)
  decoder(_features(batch=1))
  assert len(decoder.cells) == 3 and all(len(r) == 7 for r in decoder.cells)
  kernels = [id(cell.conv.kernel) for repeat in decoder.cells for cell, _ in repeat]
  assert len(set(kernels)) == 21
  # Only repeat 0 sees other widths; later repeats' cells read `filters`-wide maps.
  assert all(not r.project for repeat in decoder.cells[1:] for c, _ in repeat
             for r in c.resamplers)


def test_backbone_levels_above_the_pyramid_are_ignored_and_levels_can_shrink():
  features = _features(batch=1)
  features["P6"] = np.zeros((1, 2, 2, 4), np.float32)
  spec5 = "P3:sum:0,1:out P4:gp:1,2:out P5:sum:2,0:out"
  out = NasFpn(spec5, filters=4, num_repeats=2, min_level=3, max_level=5)(features)
  assert sorted(out) == ["P3", "P4", "P5"] and out["P5"].shape == (1, 4, 4, 4)


def test_nasfpn_spec_as_fpn_runs_top_down():
  out = NasFpn("fpn", filters=4, num_repeats=1)(_features(1, size=128))
  assert out["P3"].shape == (1, 16, 16, 4) and out["P7"].shape == (1, 1, 1, 4)


def test_decoder_argument_errors():
  with pytest.raises(SpecError, match="cell 0: first input index 9"):
    NasFpn("P3:sum:9,0:out P4:sum:0,1:out P5:sum:0,1:out P6:sum:0,1:out P7:sum:0,1:out")
  with pytest.raises(ValueError, match="spec covers levels P3..P5 but the decoder has "
                                       "min_level=3, max_level=7"):
    NasFpn({"cells": [[3, "sum", [0, 1], True], [4, "sum", [1, 2], True],
                      [5, "sum", [2, 0], True]], "min_level": 3, "max_level": 5})
  with pytest.raises(ValueError, match="num_repeats 0"):
    NasFpn(num_repeats=0)
  with pytest.raises(ValueError, match="global_pool_type 'min'"):
    NasFpn(global_pool_type="min")
  with pytest.raises(ValueError, match="needs backbone level P3"):
    NasFpn(filters=4, num_repeats=1)({"P4": np.zeros((1, 8, 8, 4), np.float32)})
  with pytest.raises(ValueError, match=r"P3 is \(8, 8\), but its height and width must be "
                                       r"divisible by 16.*multiple of 128"):
    NasFpn(filters=4, num_repeats=1)(_features(1, size=64))
  with pytest.raises(ValueError, match="contiguous backbone levels"):
    FPN(filters=4)({"P3": np.zeros((1, 16, 16, 4), np.float32),
                    "P5": np.zeros((1, 4, 4, 4), np.float32)})
  with pytest.raises(ValueError, match="FPN needs backbone level P3"):
    FPN(filters=4)({"P4": np.zeros((1, 8, 8, 4), np.float32)})


def test_fpn_levels_above_the_backbone_as_model_garden_makes_them():
  fpn = FPN(filters=8)
  fpn(_features(batch=1))
  assert list(fpn.laterals) == ["P3", "P4", "P5"] and list(fpn.extra) == ["P6", "P7"]
  assert all(c.strides == (2, 2) and c.kernel_size == (3, 3) for c in fpn.extra.values())
  assert list(fpn.norms) == ["P3", "P4", "P5", "P6", "P7"]
  init = fpn.laterals["P3"].kernel_initializer  # Model Garden's FPN: "VarianceScaling" defaults
  assert (init.scale, init.mode, init.distribution) == (1.0, "fan_in", "truncated_normal")


@pytest.mark.parametrize("make, expected_all, expected_trainable", [
    (lambda: NasFpn("nasfpn", filters=256, num_repeats=7), 29_885_440, 29_858_816),
    (lambda: FPN(3, 7, filters=256), 3_873_792, 3_871_232),
], ids=["nasfpn-7@256", "fpn"])
def test_model_garden_decoder_parameter_counts(make, expected_all, expected_trainable):
  # ResNet-50 inputs (C3..C5 with 512/1024/2048 channels), levels 3..7, 256 filters.
  # Model Garden's reported counts (nasfpn-facts.md) are Keras `count_params()` totals, which
  # include the batch-norm moving mean/variance: the same reading reproduces its backbone
  # (23,561,152) and head (6,732,375) figures. Trainable = total - 2 * (BN channels).
  layer = make()
  layer(_symbolic())
  assert sum(int(np.prod(w.shape)) for w in layer.weights) == expected_all
  assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected_trainable
