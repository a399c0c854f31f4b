"""int8 TFLite keeps the AP of a fully trained NAS-FPNLite: issue 13's bound on a real model.

The suite's other AP bounds are measured on a tiny FPN trained for a minute (AP ~0.1). The
int8 losses this project had were found on a well-trained model (full_int8 lost 0.16 AP on
the embedded default until the export kept its box path float), and a model at AP ~0.1 has
little AP to lose. So this test starts from committed weights: `configs/shapes_nasfpnlite.yaml`
trained for its full 1,000 steps (runtime.seed=1; AP 0.456 on the embedded validation split),
3.4 MB (model weights only, no optimizer state).
Regenerate them after a change of the model's layers (the load fails then):

  python run.py --config_file=configs/shapes_nasfpnlite.yaml --model_dir=/tmp/lite \
      --params_override=runtime.seed=1 --noexport_after_training
  python -c "from nasfpn_tf.serving.export_lib import load_trained_model as l; \
      l('/tmp/lite')[0].save_weights('tests/serving/trained_nasfpnlite/checkpoint.weights.h5')"
  cp /tmp/lite/config.yaml tests/serving/trained_nasfpnlite/
"""

from __future__ import annotations

import os

import pytest

from nasfpn_tf.configs.loading import load_config, override
from nasfpn_tf.serving import export_lib
from serving_helpers import parity_module

pytestmark = pytest.mark.slow

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trained_nasfpnlite")
# The images export/parity.py scores (and the README's NAS-FPNLite parity table): 200
# validation images, 100 of them also the full_int8 calibration set.
NUM_IMAGES, NUM_CALIBRATION = 200, 100
VARIANTS = ("float32", "dynamic_int8", "full_int8")
# AP (0..1) an int8 file may lose against float32: the bound of issue 13.
AP_BOUND = 0.01


@pytest.fixture(scope="module")
def aps(tmp_path_factory):
  root = tmp_path_factory.mktemp("trained_lite")
  # The data sections of the committed config, with the dataset generated under tmp.
  config = override(load_config(os.path.join(FIXTURE, "config.yaml")), {"task": {
      split: {"embedded_dir": str(root / "shapes")}
      for split in ("train_data", "validation_data")}})
  out = str(root / "export")
  export_lib.export_from_model_dir(FIXTURE, out, "tflite", config=config, variants=VARIANTS,
                                   num_calibration_images=NUM_CALIBRATION)
  parity = parity_module()
  examples, gt = parity.load_examples(config, NUM_IMAGES)
  ev = parity.Evaluation(examples, gt, config.task.model.input_size)
  result = {}
  for variant in VARIANTS:
    detector = export_lib.TFLiteDetector(export_lib.tflite_path(out, variant))
    result[variant] = ev.ap([detector.detect(image) for image in ev.images])["AP"]
  print(f"AP on {len(ev.images)} validation images: {result}")  # in the log, with -s
  return result


def test_the_committed_model_is_well_trained(aps):
  # Below this the bound would say little: the tiny fixture's AP is ~0.1.
  assert aps["float32"] > 0.4, aps


@pytest.mark.parametrize("variant", ["dynamic_int8", "full_int8"])
def test_int8_ap_within_bound_of_float32(aps, variant):
  assert abs(aps[variant] - aps["float32"]) < AP_BOUND, aps
