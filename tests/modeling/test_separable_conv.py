"""`use_separable_conv` (NAS-FPNLite): merging cells and head, counted by hand."""

import json

import keras
import numpy as np

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.modeling.decoders.nasfpn import NasFpn
from nasfpn_tf.modeling.heads.retinanet_head import RetinaNetHead
from nasfpn_tf.modeling.layers.merging_cell import MergingCell
from tests.layer_harness import check_layer


def _features(widths=(8, 12, 16), size=128, batch=2):
  rng = np.random.default_rng(0)
  return {f"P{l}": rng.normal(size=(batch, size // 2**l, size // 2**l, w)).astype(np.float32)
          for l, w in zip((3, 4, 5), widths)}


def _count(layer) -> int:
  return sum(int(np.prod(w.shape)) for w in layer.weights)


def test_separable_nasfpn_harness_and_config_round_trip():
  kwargs = dict(spec="nasfpn", filters=8, num_repeats=2, min_level=3, max_level=7,
                global_pool_type="max", use_dropblock=False, dropblock_size=3,
                dropblock_keep_prob=0.9, norm_momentum=0.99, norm_epsilon=1e-3,
                use_sync_bn=False, kernel_initializer=None, use_separable_conv=True)
  expected = {"spec": {"cells": parse_spec("nasfpn").to_records(), "min_level": 3,
                       "max_level": 7}}
  layer = check_layer(NasFpn, kwargs, _features(), expected_config=expected)
  config = json.loads(json.dumps(layer.get_config()))
  assert config["use_separable_conv"] is True
  clone = NasFpn.from_config(config)
  clone(_features())
  assert clone.use_separable_conv and clone.spec == parse_spec("nasfpn")
  assert all(isinstance(cell.conv, keras.layers.SeparableConv2D)
             for repeat in clone.cells for cell, _ in repeat)
  # The spec (and so the drawing) does not know about the conv type.
  assert config["spec"] == NasFpn("nasfpn", filters=8).get_config()["spec"]


def test_separable_nasfpn_parameter_count_by_hand():
  f = 8  # pyramid width; backbone widths 8, 12, 16 for P3, P4, P5
  layer = NasFpn("nasfpn", filters=f, num_repeats=1, use_separable_conv=True)
  layer(_features())
  bn = 4 * f  # gamma, beta, moving mean, moving variance
  # P3 is already 8 wide; P4, P5 get a 1x1 conv with bias + BN; P6, P7 come from 8-wide maps.
  inputs = (12 * f + f + bn) + (16 * f + f + bn)
  separable_cell = 3 * 3 * f + f * f + f + bn  # depthwise + pointwise + bias, BN
  assert _count(layer) == inputs + 7 * separable_cell == 1536
  dense = NasFpn("nasfpn", filters=f, num_repeats=1)
  dense(_features())
  assert _count(dense) == inputs + 7 * (3 * 3 * f * f + f + bn)


def test_separable_cell_harness():
  rng = np.random.default_rng(0)
  inputs = [rng.normal(size=(2, 16, 16, 8)).astype(np.float32),
            rng.normal(size=(2, 4, 4, 8)).astype(np.float32)]
  kwargs = dict(input_levels=[3, 5], target_level=4, op="global_pool", filters=8,
                kernel_initializer="he_normal", use_separable_conv=True)
  layer = check_layer(MergingCell, kwargs, inputs)
  assert layer.conv.depthwise_kernel.shape == (3, 3, 8, 1)
  assert layer.conv.pointwise_kernel.shape == (1, 1, 8, 8)


def test_separable_head_parameter_count_by_hand_and_round_trip():
  c, f, a, k, convs = 8, 8, 2, 4, 2  # input width, filters, anchors, classes, convs/branch
  kwargs = dict(min_level=3, max_level=5, num_classes=k, num_anchors_per_location=a,
                num_convs=convs, filters=f, use_separable_conv=True)
  head = RetinaNetHead(**kwargs)
  feats = _features(widths=(c, c, c), size=64)
  cls, box = head(feats)
  assert cls["P3"].shape == (2, 8, 8, a * k) and box["P5"].shape == (2, 2, 2, a * 4)
  # Separable 3x3, n_in -> n_out: 9 * n_in depthwise + n_in * n_out pointwise + n_out bias.
  sep = lambda n_in, n_out: 9 * n_in + n_in * n_out + n_out
  tower = sep(c, f) + (convs - 1) * sep(f, f)
  norms = 3 * convs * 4 * f  # per level, per conv
  expected = 2 * (tower + norms) + sep(f, a * k) + sep(f, a * 4)
  assert _count(head) == expected == 1248
  # Predictions still start at the prior (pointwise init is the small one).
  np.testing.assert_allclose(np.asarray(cls["P4"]).mean(), np.log(0.01 / 0.99), atol=1e-2)
  config = json.loads(json.dumps(head.get_config()))
  assert config["use_separable_conv"] is True
  clone = RetinaNetHead.from_config(config)
  clone(feats)
  clone.set_weights(head.get_weights())
  np.testing.assert_allclose(np.asarray(clone(feats)[0]["P3"]), np.asarray(cls["P3"]), atol=1e-6)
