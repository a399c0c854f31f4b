"""Parameter parity with TensorFlow Model Garden's retinanet (R-50, 640x640, 91 classes).

Model Garden's reported counts (../shared/reference/nasfpn-facts.md) include batch-norm
moving statistics, so they are compared with our `*_all` counts; the trainable counts are
pinned too so a change in either shows up.
"""

import os

import pytest

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.factory import build_model, count_params

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")

MODEL_GARDEN = {
    "retinanet_r50_nasfpn_640_coco.yaml": {"total": 60_178_967, "backbone": 23_561_152,
                                           "decoder": 29_885_440, "head": 6_732_375},
    "retinanet_r50_fpn_640_coco.yaml": {"total": 34_167_319, "backbone": 23_561_152,
                                        "decoder": 3_873_792, "head": 6_732_375},
}


@pytest.mark.parametrize("name", sorted(MODEL_GARDEN))
def test_counts_equal_model_garden(name):
  config = load_config(os.path.join(CONFIGS, name)).task.model
  counts = count_params(build_model(config))
  reference = MODEL_GARDEN[name]
  for part in ("backbone", "decoder", "head"):
    assert counts[f"params_{part}_all"] == reference[part], part
  assert counts["params_total_all"] == reference["total"]
  assert abs(counts["params_total_all"] - reference["total"]) <= 0.001 * reference["total"]
  # Trainable only (BN statistics excluded).
  assert counts["params_total"] < counts["params_total_all"]
