import keras
import numpy as np
import pytest

from nasfpn_tf.modeling.layers.merge_ops import global_pool_merge, merge, sum_merge
from nasfpn_tf.modeling.layers.resample import (Resample, make_initializer, resample_to_level,
                                                resampled_size)
from tests.layer_harness import check_layer


def _sigmoid(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


# --- resampling: golden values ---------------------------------------------------------------

def test_upsample_is_nearest_neighbour():
  x = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
  up = np.asarray(resample_to_level(x, 5, 4))[0, :, :, 0]
  np.testing.assert_array_equal(up, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
  up2 = np.asarray(resample_to_level(x, 5, 3))[0, :, :, 0]
  np.testing.assert_array_equal(up2, np.kron([[0, 1], [2, 3]], np.ones((4, 4))))


def test_downsample_is_max_pool_same_padding():
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(np.asarray(resample_to_level(x, 3, 4))[0, :, :, 0],
                                [[5, 7], [13, 15]])
  np.testing.assert_array_equal(np.asarray(resample_to_level(x, 3, 5))[0, :, :, 0], [[15]])
  x6 = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
  # pool = stride = 4, 'same' padding: 2 outputs need 2 pad cells, one each side, so the
  # windows are rows/cols {0, 1, 2} and {3, 4, 5}.
  np.testing.assert_array_equal(np.asarray(resample_to_level(x6, 3, 5))[0, :, :, 0],
                                [[14, 17], [32, 35]])
  # Odd size going coarser rounds up: 3 -> 2 (the last window is the padded one).
  x3 = -np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
  np.testing.assert_array_equal(np.asarray(resample_to_level(x3, 3, 4))[0, :, :, 0],
                                [[0, -2], [-6, -8]])
  assert [resampled_size(s, 3, 4) for s in (3, 4, None)] == [2, 2, None]
  assert resampled_size(3, 5, 3) == 12


def test_same_level_is_identity():
  x = np.random.default_rng(0).normal(size=(1, 3, 3, 2)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(resample_to_level(x, 4, 4)), x)


def test_projection_is_conv_then_bn_without_activation():
  # 2 -> 1 channels with kernel [1, -1] and bias 0.5; fresh BN in inference divides by
  # sqrt(1 + eps). Negative values survive (no ReLU), then max-pool by 2.
  layer = Resample(3, 4, filters=1, norm_epsilon=1e-3)
  x = np.zeros((1, 2, 2, 2), np.float32)
  x[0, :, :, 0] = [[1, 2], [3, 4]]
  x[0, :, :, 1] = [[4, 4], [4, 9]]
  layer(x)
  layer.conv.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 2, 1),
                          np.array([0.5], np.float32)])
  out = np.asarray(layer(x, training=False))
  assert out.shape == (1, 1, 1, 1)
  # conv: [[1-4, 2-4], [3-4, 4-9]] + 0.5 = [[-2.5, -1.5], [-0.5, -4.5]]; max -> -0.5.
  np.testing.assert_allclose(out[0, 0, 0, 0], -0.5 / np.sqrt(1 + 1e-3), rtol=1e-5)


def test_resample_layer_harness_and_projection_rule():
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 12)).astype(np.float32)
  layer = check_layer(Resample, dict(source_level=3, target_level=4, filters=6,
                                     norm_momentum=0.9, norm_epsilon=1e-3, use_sync_bn=False,
                                     kernel_initializer="he_normal"), x)
  assert layer.project
  assert len(layer.trainable_weights) == 4  # conv kernel + bias (as Model Garden), BN gamma, beta
  assert layer.conv.use_bias
  assert layer(x).shape == (2, 4, 4, 6)
  up = check_layer(Resample, dict(source_level=3, target_level=2, filters=12), x)
  assert up(x).shape == (2, 16, 16, 12) and not up.weights and not up.project


def test_initializer_arguments():
  # None: Model Garden's NAS-FPN initializer; names, configs and objects are stored literally
  # (objects serialised), and each conv gets its own fresh instance.
  default = make_initializer(None)
  assert isinstance(default, keras.initializers.VarianceScaling)
  assert (default.scale, default.mode, default.distribution) == (2.0, "fan_out",
                                                                   "untruncated_normal")
  obj = keras.initializers.RandomNormal(stddev=0.5, seed=3)
  layer = Resample(3, 4, filters=2, kernel_initializer=obj)
  config = layer.get_config()["kernel_initializer"]
  assert config["class_name"] == "RandomNormal" and config["config"]["stddev"] == 0.5
  clone = Resample.from_config(layer.get_config())
  clone.build((None, 4, 4, 3))
  assert clone.conv.kernel_initializer is not obj
  assert clone.conv.kernel_initializer.stddev == 0.5
  with pytest.raises(ValueError, match="kernel_initializer 3"):
    Resample(3, 4, kernel_initializer=3)


# --- merge ops: golden values ------------------------------------------------------------------

def test_sum_merge():
  a = np.array([[[[1.0, -2.0]]]], np.float32)
  np.testing.assert_array_equal(np.asarray(sum_merge(a, 2 * a)), [[[[3.0, -6.0]]]])


def test_global_pool_merge_by_hand():
  a = np.array([[[[1.0, -2.0]], [[3.0, -4.0]]]], np.float32)  # [1, 2, 1, 2]
  b = np.array([[[[2.0, 1.0]], [[-1.0, 4.0]]]], np.float32)
  # max over H, W per channel: [3, -2]; avg: [2, -3].
  np.testing.assert_allclose(np.asarray(global_pool_merge(a, b, "max")),
                             a + b * _sigmoid([3.0, -2.0]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(global_pool_merge(a, b, "avg")),
                             a + b * _sigmoid([2.0, -3.0]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(global_pool_merge(a, b)), np.asarray(
      global_pool_merge(a, b, "max")))  # max is the default
  # The gate is per example: a second batch entry does not leak into the first.
  a2 = np.concatenate([a, a + 10], axis=0)
  out = np.asarray(global_pool_merge(a2, np.concatenate([b, b]), "max"))
  np.testing.assert_allclose(out[0], (a + b * _sigmoid([3.0, -2.0]))[0], rtol=1e-6)
  with pytest.raises(ValueError, match="pool_type 'min'"):
    global_pool_merge(a, b, "min")


def test_merge_gates_with_the_coarser_input():
  a = np.full((1, 2, 2, 1), 2.0, np.float32)
  b = np.full((1, 2, 2, 1), 5.0, np.float32)
  # a came from the coarser level (6 > 4): a + b * sigmoid(max(a)).
  np.testing.assert_allclose(np.asarray(merge("global_pool", a, b, 6, 4)), 2 + 5 * _sigmoid(2.0),
                             rtol=1e-6)
  # Swapped levels: b is the gate now.
  np.testing.assert_allclose(np.asarray(merge("global_pool", a, b, 4, 6)), 5 + 2 * _sigmoid(5.0),
                             rtol=1e-6)
  # Tie: the first input gates.
  np.testing.assert_allclose(np.asarray(merge("global_pool", a, b, 5, 5)), 2 + 5 * _sigmoid(2.0),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(merge("global_pool", a, b, 5, 5, "avg")),
                             2 + 5 * _sigmoid(2.0), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(merge("sum", a, b, 4, 6)), np.asarray(sum_merge(a, b)))
  with pytest.raises(ValueError, match="op 'mul'"):
    merge("mul", a, b, 4, 4)
