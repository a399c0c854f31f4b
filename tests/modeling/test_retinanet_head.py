import math

import keras
import numpy as np

from nasfpn_tf.modeling.heads.retinanet_head import RetinaNetHead

KWARGS = dict(min_level=3, max_level=5, num_classes=4, num_anchors_per_location=2, num_convs=2,
              filters=8, prior_probability=0.05, norm_momentum=0.9, norm_epsilon=1e-3,
              use_sync_bn=False)


def _features(batch=2):
  rng = np.random.default_rng(0)
  return {f"P{l}": rng.normal(size=(batch, 64 // 2**l, 64 // 2**l, 8)).astype(np.float32)
          for l in range(3, 6)}


def test_shapes_and_prior_bias():
  head = RetinaNetHead(**KWARGS)
  cls, box = head(_features())
  assert cls["P3"].shape == (2, 8, 8, 8) and box["P5"].shape == (2, 2, 2, 8)
  # Near-zero classifier kernel: logits start at the prior's log-odds.
  np.testing.assert_allclose(np.asarray(cls["P4"]).mean(), -math.log(0.95 / 0.05), atol=1e-2)
  expected = head.compute_output_shape({k: v.shape for k, v in _features().items()})
  assert tuple(expected[0]["P3"]) == (2, 8, 8, 8)


def test_convs_shared_norms_per_level():
  head = RetinaNetHead(**KWARGS)
  head(_features())
  names = [w.path for w in head.weights]
  assert sum("class_conv0/kernel" in n for n in names) == 1
  assert sum("class_bn0_" in n and n.endswith("gamma") for n in names) == 3


def test_config_round_trip_and_weights():
  head = RetinaNetHead(**KWARGS)
  feats = _features()
  out = head(feats)
  config = head.get_config()
  for key, value in KWARGS.items():
    assert config[key] == value
  clone = RetinaNetHead.from_config(config)
  clone(feats)
  clone.set_weights(head.get_weights())
  out2 = clone(feats)
  np.testing.assert_allclose(np.asarray(out[0]["P3"]), np.asarray(out2[0]["P3"]), atol=1e-6)


def test_mixed_precision_policy():
  head = RetinaNetHead(**KWARGS, dtype="mixed_float16")
  cls, _ = head(_features())
  assert keras.backend.standardize_dtype(cls["P3"].dtype) == "float16"


def test_model_garden_parameter_count():
  head = RetinaNetHead(3, 7, 91, 9)
  head({f"P{l}": keras.Input((640 // 2**l, 640 // 2**l, 256)) for l in range(3, 8)})
  trainable = sum(int(np.prod(w.shape)) for w in head.trainable_weights)
  everything = sum(int(np.prod(w.shape)) for w in head.weights)
  assert everything == 6_732_375  # Model Garden's reported count (includes BN statistics)
  assert trainable == 6_711_895
