import numpy as np
import pytest

from nasfpn_tf.modeling.layers.merge_ops import global_pool_merge, merge, sum_merge
from nasfpn_tf.modeling.layers.resample import Resample, resample_to_level
from tests.layer_harness import check_layer


def test_upsample_is_nearest_neighbour():
  x = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
  up = np.asarray(resample_to_level(x, 5, 4))[0, :, :, 0]
  np.testing.assert_array_equal(up, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
  up2 = np.asarray(resample_to_level(x, 5, 3))
  assert up2.shape == (1, 8, 8, 1) and up2[0, 7, 0, 0] == 2


def test_downsample_is_max_pool_same_padding():
  x = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
  down = np.asarray(resample_to_level(x, 3, 5))[0, :, :, 0]
  # pool = stride = 4, 'same' padding: 2 outputs need 2 pad cells, one each side, so the
  # windows are rows/cols {0, 1, 2} and {3, 4, 5}.
  np.testing.assert_array_equal(down, [[14, 17], [32, 35]])


def test_same_level_is_identity():
  x = np.random.default_rng(0).normal(size=(1, 3, 3, 2)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(resample_to_level(x, 4, 4)), x)


def test_global_pool_merge_by_hand():
  a = np.array([[[[1.0, -2.0]], [[3.0, -4.0]]]], np.float32)  # [1, 2, 1, 2]
  b = np.ones((1, 2, 1, 2), np.float32)
  got = np.asarray(global_pool_merge(a, b, "max"))
  gate = 1 / (1 + np.exp(-np.array([3.0, -2.0])))  # max over H, W per channel
  np.testing.assert_allclose(got, a + gate, rtol=1e-6)
  gate_avg = 1 / (1 + np.exp(-np.array([2.0, -3.0])))
  np.testing.assert_allclose(np.asarray(global_pool_merge(a, b, "avg")), a + gate_avg, rtol=1e-6)


def test_merge_gates_with_the_coarser_input():
  a = np.full((1, 2, 2, 1), 2.0, np.float32)
  b = np.full((1, 2, 2, 1), 5.0, np.float32)
  s = 1 / (1 + np.exp(-2.0))
  # a came from the coarser level (6 > 4): a + b * sigmoid(max(a)).
  np.testing.assert_allclose(np.asarray(merge("global_pool", a, b, 6, 4)), 2 + 5 * s, rtol=1e-6)
  # Swapped levels: b is the gate now.
  s5 = 1 / (1 + np.exp(-5.0))
  np.testing.assert_allclose(np.asarray(merge("global_pool", a, b, 4, 6)), 5 + 2 * s5, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(merge("sum", a, b, 4, 6)), np.asarray(sum_merge(a, b)))
  with pytest.raises(ValueError, match="op 'mul'"):
    merge("mul", a, b, 4, 4)


def test_resample_layer_projects_only_when_widths_differ():
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 12)).astype(np.float32)
  layer = check_layer(Resample, dict(source_level=3, target_level=4, filters=6,
                                     norm_momentum=0.9, norm_epsilon=1e-3, use_sync_bn=False), x)
  assert len(layer.trainable_weights) == 4  # conv kernel, bias, BN gamma, beta
  same = Resample(3, 2, filters=12)
  out = same(x)
  assert out.shape == (2, 16, 16, 12) and not same.weights
