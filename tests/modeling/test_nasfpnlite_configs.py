"""The shipped NAS-FPNLite configs: what they build, against the reported figures."""

import os

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.factory import build_model, count_params

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
REPORTED_PARAMS = 2_160_000  # NAS-FPNLite, reference facts (approximate)


def test_coco_config_is_nasfpnlite_near_the_reported_size():
  c = load_config(os.path.join(CONFIGS, "retinanet_mobilenetv2_nasfpnlite_384_coco.yaml"),
                  ['{"task": {"model": {"backbone": {"weights_path": ""}}}}'])  # no download
  m = c.task.model
  assert m.backbone.type == "mobilenet_v2" and m.backbone.width_multiplier == 1.0
  assert m.decoder.use_separable_conv and m.head.use_separable_conv
  counts = count_params(build_model(m))
  assert abs(counts["params_total"] - REPORTED_PARAMS) <= 0.02 * REPORTED_PARAMS, counts
  assert counts["params_total"] == 2_179_031  # README figure (run.py --mode=describe)


def test_embedded_config_is_the_default_with_the_lite_parts():
  lite = load_config(os.path.join(CONFIGS, "shapes_nasfpnlite.yaml"))
  default = load_config(os.path.join(CONFIGS, "shapes_nasfpn.yaml"))
  assert lite.task.model.backbone.type == "mobilenet_v2"
  assert lite.task.model.decoder.use_separable_conv and lite.task.model.head.use_separable_conv
  for part in ("decoder", "head"):
    assert getattr(lite.task.model, part).filters == getattr(default.task.model, part).filters
  assert lite.task.model.decoder.num_repeats == default.task.model.decoder.num_repeats
  assert lite.task.model.input_size == default.task.model.input_size
  assert lite.task.train_data == default.task.train_data
  assert lite.trainer.train_steps <= default.trainer.train_steps
