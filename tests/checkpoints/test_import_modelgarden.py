"""Model Garden checkpoints, written by Model Garden itself, imported into our RetinaNet.

`modelgarden_writer.py` runs in the reference environment (tf-models-official 2.20 on
TensorFlow 2.20 + tf-keras; `bash bench/setup_reference.sh`, which .ci/run calls): it builds
Model Garden's R-18 NAS-FPN 2@256 RetinaNet at 128 px, sets every weight to random values
(batch-norm statistics too), writes `tf.train.Checkpoint(model=...)` and a backbone-only
checkpoint, and its own per-level outputs for one image. We import and compare.

Without the reference environment the tests skip, except under CI (NASFPN_REQUIRE_REFERENCE=1,
set by .ci/run), where they fail.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from nasfpn_tf import checkpoint_import
from nasfpn_tf.checkpoint_import import CheckpointImportError
from nasfpn_tf.configs.experiment import BackboneConfig, DecoderConfig, HeadConfig, ModelConfig
from nasfpn_tf.modeling.factory import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REFERENCE_PYTHON = os.environ.get(
    "NASFPN_REFERENCE_PYTHON", os.path.join(ROOT, "bench", ".venv-modelgarden", "bin", "python"))
SIZE, NUM_CLASSES, DEPTH, REPEATS = 128, 5, 18, 2
RTOL = 1e-5

pytestmark = pytest.mark.slow


def _model_config(filters: int = 256, num_classes: int = NUM_CLASSES) -> ModelConfig:
  return ModelConfig(num_classes=num_classes, input_size=[SIZE, SIZE],
                     backbone=BackboneConfig(depth=DEPTH),
                     decoder=DecoderConfig(type="nasfpn", filters=filters, num_repeats=REPEATS),
                     head=HeadConfig(filters=256))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Model Garden's checkpoints and outputs (one subprocess in the reference venv)."""
  if not os.path.exists(REFERENCE_PYTHON):
    message = (f"no reference environment at {REFERENCE_PYTHON}: "
               "run `bash bench/setup_reference.sh`")
    if os.environ.get("NASFPN_REQUIRE_REFERENCE") == "1":
      pytest.fail(message)
    pytest.skip(message)
  out = tmp_path_factory.mktemp("modelgarden")
  cmd = [REFERENCE_PYTHON, os.path.join(HERE, "modelgarden_writer.py"), "--out", str(out),
         "--depth", str(DEPTH), "--num_repeats", str(REPEATS), "--size", str(SIZE),
         "--num_classes", str(NUM_CLASSES)]
  # Its own TensorFlow 2.20 and tf-keras: nothing of this interpreter's path.
  env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {"full": str(out / "model" / "ckpt"), "backbone": str(out / "backbone" / "ckpt"),
          "outputs": dict(np.load(out / "outputs.npz"))}


def _our_outputs(model, image) -> dict:
  """Per-level outputs named as the writer names Model Garden's."""
  features = model.backbone(image, training=False)
  pyramid = model.decoder(features, training=False)
  cls, box = model.head(pyramid, training=False)
  out = {}
  for prefix, maps in (("backbone", features), ("decoder", pyramid), ("cls", cls), ("box", box)):
    out.update({f"{prefix}_{k}": np.asarray(v) for k, v in maps.items()})
  return out


def _max_relative(ours: np.ndarray, theirs: np.ndarray) -> float:
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def test_full_checkpoint_gives_model_gardens_outputs_at_every_level(reference):
  model = build_model(_model_config())
  report = checkpoint_import.load_checkpoint(model, reference["full"], modules="all")
  assert report.source == "modelgarden"
  assert report.filled == len(model.backbone.weights) + len(model.decoder.weights) + len(
      model.head.weights)
  assert report.unused == [] and report.left == {}
  expected = reference["outputs"]
  ours = _our_outputs(model, expected["image"])
  keys = [k for k in expected if k != "image"]
  # C3..C5, P3..P7 of the decoder, class and box outputs of P3..P7.
  assert len(keys) == 3 + 5 + 5 + 5 and set(keys) <= set(ours)
  diffs = {}
  for key in keys:
    assert ours[key].shape == expected[key].shape, key
    # The random weights make activations of order 1-10, not a degenerate all-zero map.
    assert np.max(np.abs(expected[key])) > 0.1, key
    diffs[key] = _max_relative(ours[key], expected[key])
    assert diffs[key] <= RTOL, key
  # For the record (pytest -s): the README quotes it.
  print(f"max relative difference over {len(keys)} maps: {max(diffs.values()):.3g}, max abs "
        f"{max(float(np.max(np.abs(ours[k] - expected[k]))) for k in keys):.3g}")


def test_backbone_checkpoint_fills_the_backbone_and_leaves_the_rest(reference):
  model = build_model(_model_config())
  decoder_before = [np.array(w) for w in model.decoder.weights]
  report = checkpoint_import.load_checkpoint(model, reference["backbone"], modules="backbone")
  assert report.filled == len(model.backbone.weights)
  assert report.left == {"decoder": len(model.decoder.weights), "head": len(model.head.weights)}
  assert report.unused == []
  expected = reference["outputs"]
  ours = _our_outputs(model, expected["image"])
  for level in (3, 4, 5):
    key = f"backbone_P{level}"
    assert _max_relative(ours[key], expected[key]) <= RTOL, key
  assert all(np.array_equal(a, np.array(w)) for a, w in zip(decoder_before, model.decoder.weights))


def test_trainer_checkpoint_imports_its_backbone_alone(reference):
  # Model Garden's own recipe: an ImageNet or COCO checkpoint, init_checkpoint_modules=backbone.
  model = build_model(_model_config())
  report = checkpoint_import.initialize(model, reference["full"], "backbone", verbose=0)
  assert report.filled == len(model.backbone.weights)
  assert len(report.unused) == len(model.decoder.weights) + len(model.head.weights)


def test_backbone_checkpoint_cannot_fill_the_whole_model(reference):
  model = build_model(_model_config())
  with pytest.raises(CheckpointImportError, match=r"holds no decoder") as e:
    checkpoint_import.initialize(model, reference["backbone"], "all", verbose=0)
  assert "\n" not in str(e.value)


def test_other_num_classes_fails_naming_the_classifier(reference):
  model = build_model(_model_config(num_classes=NUM_CLASSES + 2))
  before = [np.array(w) for w in model.backbone.weights[:3]]
  with pytest.raises(CheckpointImportError) as e:
    checkpoint_import.load_checkpoint(model, reference["full"], modules="all")
  message = str(e.value)
  assert message.startswith("model/_head/_classifier/kernel/") and "\n" not in message
  assert "(3, 3, 256, 45)" in message and "(3, 3, 256, 63)" in message
  # Nothing was assigned: every pair is checked first.
  assert all(np.array_equal(a, np.array(w)) for a, w in zip(before, model.backbone.weights))
  # The usual fix for another dataset: everything but the head.
  report = checkpoint_import.load_checkpoint(model, reference["full"], modules="backbone_decoder")
  assert report.left == {"head": len(model.head.weights)}


def test_decoder_at_384_filters_is_refused_by_name(reference):
  model = build_model(_model_config(filters=384))
  with pytest.raises(CheckpointImportError, match=r"^decoder \(filters=384\): Model Garden's "
                     r"NAS-FPN at filters != 256 resamples every cell input"):
    checkpoint_import.load_checkpoint(model, reference["full"], modules="backbone_decoder")
  # Its backbone still imports.
  report = checkpoint_import.load_checkpoint(model, reference["full"], modules="backbone")
  assert report.filled == len(model.backbone.weights)


def test_run_py_converts_a_checkpoint_once(reference, tmp_path):
  out = tmp_path / "mg.weights.h5"
  overrides = (f"task.model.input_size=[{SIZE},{SIZE}],task.model.num_classes={NUM_CLASSES},"
               f"task.model.backbone.depth={DEPTH},task.model.decoder.type=nasfpn,"
               f"task.model.decoder.num_repeats={REPEATS},task.model.decoder.filters=256,"
               "task.model.head.filters=256,task.model.head.num_convs=4,"
               "task.model.backbone.width_multiplier=1.0")
  cmd = [sys.executable, os.path.join(ROOT, "run.py"),
         "--mode=import_checkpoint", f"--checkpoint={reference['full']}", "--source=modelgarden",
         f"--params_override={overrides}", f"--output={out}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "381 variables filled" in proc.stdout
  model = build_model(_model_config())
  model.load_weights(str(out))
  expected = reference["outputs"]
  ours = _our_outputs(model, expected["image"])
  assert _max_relative(ours["cls_P3"], expected["cls_P3"]) <= RTOL
  assert _max_relative(ours["box_P7"], expected["box_P7"]) <= RTOL
