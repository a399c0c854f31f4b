"""MobileNetV2 backbone: the same network as keras.applications.MobileNetV2 at each width.

Expected shapes and counts come from keras.applications itself, never from our builder.
"""

import keras
import numpy as np
import pytest

from nasfpn_tf.configs.experiment import BackboneConfig, ConfigError
from nasfpn_tf.modeling.backbones.mobilenet_v2 import build_mobilenet_v2

SIZE = 64
# keras.applications layer names of the last block at strides 8, 16, 32.
STRIDE_LAYERS = {"P3": ("block_5_add", 8), "P4": ("block_12_add", 16),
                 "P5": ("block_16_project_BN", 32)}
# Only the final 1x1 conv to 1280 channels (a classifier's layer) is left out.
HEAD_LAYERS = ("Conv_1", "Conv_1_bn")


def _reference(alpha: float) -> keras.Model:
  return keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=alpha,
                                        include_top=False, weights=None)


@pytest.mark.parametrize("alpha", [0.35, 1.0])
def test_shapes_and_parameter_count_equal_keras_applications(alpha):
  ref = _reference(alpha)
  ours = build_mobilenet_v2((SIZE, SIZE, 3), width_multiplier=alpha)
  for key, (name, stride) in STRIDE_LAYERS.items():
    expected = (None, SIZE // stride, SIZE // stride, ref.get_layer(name).output.shape[-1])
    assert tuple(ours.output[key].shape) == expected, key
  head = sum(ref.get_layer(n).count_params() for n in HEAD_LAYERS)
  assert ours.count_params() == ref.count_params() - head
  ref_trainable = sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
  head_trainable = sum(int(np.prod(w.shape)) for n in HEAD_LAYERS
                       for w in ref.get_layer(n).trainable_weights)
  assert sum(int(np.prod(w.shape)) for w in ours.trainable_weights) == \
      ref_trainable - head_trainable


def test_local_weights_file_gives_keras_applications_outputs(tmp_path):
  alpha = 0.35
  ref = _reference(alpha)
  rng = np.random.default_rng(0)
  # Non-trivial BN statistics so that a mixed-up weight shows.
  ref.set_weights([rng.normal(scale=0.1, size=w.shape).astype(np.float32) +
                   (1.0 if "variance" in w.path else 0.0) for w in ref.weights])
  path = str(tmp_path / "mobilenet_v2_0.35.weights.h5")
  ref.save_weights(path)
  ours = build_mobilenet_v2((SIZE, SIZE, 3), width_multiplier=alpha, weights=path)
  pixels = rng.uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype(np.float32)
  # Ours takes the RetinaNet normalisation, keras.applications x / 127.5 - 1.
  mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
  got = ours((pixels - mean) / std, training=False)
  probe = keras.Model(ref.input, {k: ref.get_layer(n).output for k, (n, _) in STRIDE_LAYERS.items()})
  want = probe(pixels / 127.5 - 1.0, training=False)
  for key in STRIDE_LAYERS:
    np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-3, rtol=1e-3)


def test_batch_norm_settings_are_ours():
  ours = build_mobilenet_v2((SIZE, SIZE, 3), width_multiplier=0.35, norm_momentum=0.9,
                            norm_epsilon=1e-4)
  norms = [l for l in ours.layers[-1].layers if isinstance(l, keras.layers.BatchNormalization)]
  assert len(norms) == 51
  assert {(n.momentum, n.epsilon) for n in norms} == {(0.9, 1e-4)}


def test_bad_weights_and_width_are_named():
  with pytest.raises(ValueError, match="'/no/such.h5' does not exist"):
    build_mobilenet_v2((SIZE, SIZE, 3), weights="/no/such.h5")
  with pytest.raises(ConfigError, match="width_multiplier: 0.6: MobileNetV2 ImageNet"):
    BackboneConfig(type="mobilenet_v2", width_multiplier=0.6, weights_path="imagenet")
  with pytest.raises(ConfigError, match="weights_path: 'imagenet'"):
    BackboneConfig(type="resnet", weights_path="imagenet")
