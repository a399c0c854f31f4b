"""FusedBatchNorm: the same numbers as keras.layers.BatchNormalization, on the fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf.modeling.layers.batch_norm import FusedBatchNorm
from tests.layer_harness import check_layer

X = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 7, 8)).astype("float32")


def _pair(dtype: str = "float32", **kwargs):
  """A Keras batch norm and ours with the same (non-trivial) weights."""
  layers = [keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, **kwargs),
            FusedBatchNorm(momentum=0.9, dtype=dtype, **kwargs)]
  for layer in layers:
    layer.build(X.shape)
    if layer.scale:
      layer.gamma.assign(np.linspace(0.5, 2.0, 8))
    if layer.center:
      layer.beta.assign(np.linspace(-1.0, 1.0, 8))
  return layers


def _train_step(layer, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=True)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 3)  # non-linear, so every grad matters
  return y, tape.gradient(loss, [x] + layer.trainable_variables)


def _ops_in_graph(layer, training: bool) -> set:
  fn = tf.function(lambda x: layer(x, training=training))
  return {n.op for n in fn.get_concrete_function(tf.constant(X)).graph.as_graph_def().node}


@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False}])
def test_training_matches_keras_batch_norm(kwargs):
  ref, ours = _pair(**kwargs)
  x = tf.constant(X)
  y_ref, g_ref = _train_step(ref, x)
  y, g = _train_step(ours, x)
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  assert len(g) == len(g_ref)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
  # Moving statistics: Keras' update with the biased batch variance.
  np.testing.assert_allclose(ours.moving_mean, 0.1 * X.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(ours.moving_variance, 0.9 + 0.1 * X.var((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(ours.moving_variance, ref.moving_variance, rtol=1e-6)


def test_inference_matches_keras_and_uses_moving_statistics():
  ref, ours = _pair()
  for layer in (ref, ours):
    layer.moving_mean.assign(np.full(8, 1.5))
    layer.moving_variance.assign(np.full(8, 4.0))
  y = np.asarray(ours(X, training=False))
  np.testing.assert_allclose(y, ref(X, training=False), atol=1e-5)
  gamma, beta = np.linspace(0.5, 2.0, 8), np.linspace(-1.0, 1.0, 8)
  np.testing.assert_allclose(y, (X - 1.5) / np.sqrt(4.0 + 1e-3) * gamma + beta, atol=1e-5)


def test_frozen_layer_normalises_with_moving_statistics_in_training():
  ref, ours = _pair()
  ref.trainable = ours.trainable = False
  np.testing.assert_allclose(ours(X, training=True), ref(X, training=True), atol=1e-5)
  np.testing.assert_array_equal(ours.moving_mean, np.zeros(8))  # no update


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_dtype_and_matches_keras(policy):
  ref, ours = _pair(policy)
  x = tf.constant(X)
  y_ref, g_ref = _train_step(ref, x)
  y, g = _train_step(ours, x)
  assert y.dtype == y_ref.dtype == keras.mixed_precision.Policy(policy).compute_dtype
  assert ours.gamma.dtype == "float32"
  np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32), atol=0.05)
  np.testing.assert_allclose(ours.moving_variance, ref.moving_variance, rtol=1e-5)


def test_runs_the_fused_kernel_in_both_modes():
  _, ours = _pair()
  assert "FusedBatchNormV3" in _ops_in_graph(ours, training=True)
  assert "FusedBatchNormV3" in _ops_in_graph(ours, training=False)


def test_falls_back_to_keras_where_the_kernel_does_not_apply():
  ref, ours = _pair(synchronized=True)
  assert "FusedBatchNormV3" not in _ops_in_graph(ours, training=True)
  np.testing.assert_allclose(ours(X, training=True), ref(X, training=True), atol=1e-5)
  ref, ours = keras.layers.BatchNormalization(), FusedBatchNorm()
  x2 = X.reshape(2, 35, 8)  # rank 3: not NHWC
  np.testing.assert_allclose(ours(x2, training=True), ref(x2, training=True), atol=1e-5)


def test_layer_harness():
  check_layer(FusedBatchNorm, {"momentum": 0.9, "epsilon": 1e-3, "name": "bn"}, X)
