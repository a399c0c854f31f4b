import json
import os
import subprocess
import sys

import keras
import numpy as np

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.factory import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ("task.model.num_classes=6,task.model.input_size=[128,128],task.model.backbone.depth=10,"
         "task.model.backbone.width_multiplier=0.25,task.model.decoder.filters=16,"
         "task.model.head.filters=16,task.model.head.num_convs=1,"
         "task.model.decoder.num_repeats=2,task.model.detection.score_threshold=0.0")
CUSTOM = "P5:gp:2,0 P3:sum:0,5:out P4:sum:1,6:out P5:gp:6,2:out P6:sum:3,8:out P7:gp:4,9:out"


def _small_config(decoder="nasfpn", spec="nasfpn"):
  return load_config(params_override=f"{SMALL},task.model.decoder.type={decoder},"
                                     f"task.model.decoder.spec='{spec}'").task.model


def test_outputs_cover_every_anchor():
  model = build_model(_small_config())
  out = model(np.zeros((2, 128, 128, 3), np.float32))
  n = 9 * sum((128 // 2**l) ** 2 for l in range(3, 8))
  assert model.num_anchors == n
  assert out["cls_outputs"].shape == (2, n, 6) and out["box_outputs"].shape == (2, n, 4)


def test_predict_returns_detections():
  model = build_model(_small_config("fpn"))
  det = model.predict(np.random.default_rng(0).uniform(0, 255, (3, 128, 128, 3)), verbose=0)
  assert det["detection_boxes"].shape == (3, 100, 4)
  assert det["num_detections"].shape == (3,)
  assert (det["detection_boxes"] >= 0).all() and (det["detection_boxes"] <= 128).all()


def test_keras_file_round_trip_keeps_a_custom_spec(tmp_path):
  model = build_model(_small_config("nasfpn", CUSTOM))
  images = np.random.default_rng(1).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
  before = model(images, training=False)
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  after = loaded(images, training=False)
  np.testing.assert_allclose(np.asarray(before["cls_outputs"]), np.asarray(after["cls_outputs"]),
                             atol=1e-5)
  assert loaded.decoder.spec == model.decoder.spec
  assert loaded.decoder.spec.to_string() == CUSTOM


def test_loss_falls_on_a_fixed_batch():
  model = build_model(_small_config())
  model.compile(optimizer=keras.optimizers.Adam(3e-3))
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (4, 128, 128, 3)).astype(np.float32)
  cls = np.full((4, model.num_anchors), -1, np.int32)
  cls[:, rng.choice(model.num_anchors, 20, replace=False)] = 3
  box = rng.normal(0, 0.1, (4, model.num_anchors, 4)).astype(np.float32)
  history = model.fit(images, {"cls_targets": cls, "box_targets": box}, epochs=25, batch_size=4,
                      verbose=0)
  losses = history.history["loss"]
  assert losses[-1] < 0.5 * losses[0], losses


def test_describe_prints_a_table_then_the_json():
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--mode=describe",
         f"--params_override={SMALL}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  # TensorFlow's profiler warned that it calls a deprecated function of its own.
  assert "deprecated" not in proc.stderr, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  out = json.loads(lines[-1])  # the last line stays one JSON object, for scripts
  for key in ("params_total", "params_backbone", "params_decoder", "params_head", "macs"):
    assert out[key] > 0
  assert out["params_total"] == out["params_backbone"] + out["params_decoder"] + out["params_head"]
  # The head alone at 128x128: 1 conv (16->16, 3x3) per branch on 16x16 + ... > 1e5 MACs.
  assert out["macs"] > 1e6
  assert (out["decoder_spec"], out["num_repeats"], out["filters"]) == ("nasfpn", 2, 16)
  # The table above it: the same numbers, per part, with and without BN statistics.
  assert "decoder:  NAS-FPN, spec nasfpn, 2 repeats x 16 filters, P3-P7" in lines
  assert "backbone: ResNet-10 x0.25 width" in lines
  assert "input:    128 x 128" in lines
  header = lines.index(next(line for line in lines if line.startswith("part")))
  assert lines[header].split() == ["part", "parameters", "with", "BN", "statistics"]
  for part in ("backbone", "decoder", "head", "total"):
    row = next(line.split() for line in lines[header:] if line.startswith(part))
    assert row[1:] == [f"{out[f'params_{part}']:,}", f"{out[f'params_{part}_all']:,}"], row
  macs_line = next(line for line in lines if line.startswith("multiply-adds:"))
  assert abs(float(macs_line.split()[1]) - out["macs"] / 1e9) < 0.01 * out["macs"] / 1e9
  assert macs_line.split()[2] == "G"


def test_l2_weight_decay_is_model_gardens_loss_term():
  # Model Garden adds l2(wd / 2) on conv kernels to the loss (through momentum); Keras'
  # decoupled decay with momentum 0.9 was about 10x weaker per step.
  from nasfpn_tf.optimization import build_optimizer
  config = load_config(params_override=f"{SMALL},task.model.decoder.type=fpn")
  model = build_model(config.task.model)
  cls = np.full((1, model.num_anchors), -1, np.int32)
  y = {"cls_targets": cls, "box_targets": np.zeros((1, model.num_anchors, 4), np.float32)}
  y_pred = model(np.zeros((1, 128, 128, 3), np.float32))
  plain = float(model.compute_loss(y=y, y_pred=y_pred))
  model.l2_weight_decay = 0.01
  decayed = float(model.compute_loss(y=y, y_pred=y_pred))
  kernels = [v.numpy() for v in model.trainable_variables if v.path.endswith("/kernel")]
  assert len(kernels) > 10 and not any(v.path.endswith(("gamma", "beta", "bias")) and
                                       v.name.endswith("kernel") for v in model.weights)
  expected = 0.5 * 0.01 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
  np.testing.assert_allclose(decayed - plain, expected, rtol=1e-4)
  assert keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(model)).l2_weight_decay == 0.01
  # The optimizer adds no decoupled decay on top for SGD; AdamW keeps its own.
  assert build_optimizer(config.trainer, 8, 1e-4).weight_decay is None
  config.trainer.optimizer.type = "adamw"
  assert build_optimizer(config.trainer, 8, 1e-4).weight_decay == 1e-4
