"""tensorflow/tpu (TF1, name-based) checkpoints imported into our RetinaNet.

The checkpoint is written here with tf.compat.v1 variables under the names the
tensorflow/tpu detection code creates (models/official/detection/modeling/architecture/):
  * resnet.py / nn_blocks.py / nn_ops.py: everything under `variable_scope('resnet{depth}')`,
    convs from `conv2d_fixed_padding` (tf.layers.conv2d, no bias) and batch norms from
    `BatchNormRelu` (tf.layers.batch_normalization), both unnamed, so tf.layers numbers them
    per scope in creation order: `conv2d`, `conv2d_1`, ...; `batch_normalization`, ...
    Order: stem; per block the projection (first block of a group), then conv1, conv2.
  * nasfpn.py: `resample_l{level}` scopes project backbone levels (an unnamed conv2d with
    bias, a batch norm named `bn`) where their width is not `fpn_feat_dims`; each repeat
    `fpn_cells/cell_{r}/sub_policy{k}/op_after_combine{len(feats)}` holds `conv` and `bn`.
  * heads.py `RetinanetHead`: `retinanet/class_net/class-{i}` (shared conv),
    `class-{i}-{level}` (batch norm per level), `class-predict`; `box_net` likewise.
The names are generated below the way that code creates them, independently of the
importer; values are random and distinct, so a swapped pair shows.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf import checkpoint_import
from nasfpn_tf.configs.experiment import BackboneConfig, DecoderConfig, HeadConfig, ModelConfig
from nasfpn_tf.modeling.factory import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILTERS, HEAD_FILTERS, NUM_CONVS, NUM_CLASSES, ANCHORS, REPEATS = 64, 64, 2, 3, 9, 2


class _Scope:
  """tf.layers' automatic layer names: unique per variable scope, the first without suffix."""

  def __init__(self, name: str):
    self.name, self.counts = name, {}

  def layer(self, base: str) -> str:
    n = self.counts.get(base, 0)
    self.counts[base] = n + 1
    return f"{self.name}/{base}" + (f"_{n}" if n else "")


def _bn(name: str, channels: int) -> dict:
  return {f"{name}/{v}": (channels,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}


def tpu_variables() -> dict:
  """name -> shape for ResNet-10 + NAS-FPN 2@64 + RetinaNet head, as tensorflow/tpu names them."""
  out = {}
  s = _Scope("resnet10")
  out[s.layer("conv2d") + "/kernel"] = (7, 7, 3, 64)
  out.update(_bn(s.layer("batch_normalization"), 64))
  channels = 64
  for filters in (64, 128, 256, 512):  # block_group1..4, one residual_block each
    out[s.layer("conv2d") + "/kernel"] = (1, 1, channels, filters)  # projection
    out.update(_bn(s.layer("batch_normalization"), filters))
    out[s.layer("conv2d") + "/kernel"] = (3, 3, channels, filters)
    out.update(_bn(s.layer("batch_normalization"), filters))
    out[s.layer("conv2d") + "/kernel"] = (3, 3, filters, filters)
    out.update(_bn(s.layer("batch_normalization"), filters))
    channels = filters
  for level, width in ((3, 128), (4, 256), (5, 512)):
    out[f"resample_l{level}/conv2d/kernel"] = (1, 1, width, FILTERS)
    out[f"resample_l{level}/conv2d/bias"] = (FILTERS,)
    out.update(_bn(f"resample_l{level}/bn", FILTERS))
  for r in range(REPEATS):
    for k in range(7):
      scope = f"fpn_cells/cell_{r}/sub_policy{k}/op_after_combine{5 + k}"
      out[f"{scope}/conv/kernel"] = (3, 3, FILTERS, FILTERS)
      out[f"{scope}/conv/bias"] = (FILTERS,)
      out.update(_bn(f"{scope}/bn", FILTERS))
  for net, short, outputs in (("class_net", "class", NUM_CLASSES * ANCHORS),
                              ("box_net", "box", 4 * ANCHORS)):
    channels = FILTERS
    for i in range(NUM_CONVS):
      out[f"retinanet/{net}/{short}-{i}/kernel"] = (3, 3, channels, HEAD_FILTERS)
      out[f"retinanet/{net}/{short}-{i}/bias"] = (HEAD_FILTERS,)
      for level in range(3, 8):
        out.update(_bn(f"retinanet/{net}/{short}-{i}-{level}", HEAD_FILTERS))
      channels = HEAD_FILTERS
    out[f"retinanet/{net}/{short}-predict/kernel"] = (3, 3, HEAD_FILTERS, outputs)
    out[f"retinanet/{net}/{short}-predict/bias"] = (outputs,)
  return out


# Not model weights: a TPUEstimator checkpoint also holds these; the import must leave them.
EXTRAS = {"global_step": (), "resnet10/conv2d/kernel/Momentum": (7, 7, 3, 64)}


@pytest.fixture(scope="module")
def tpu_checkpoint(tmp_path_factory):
  rng = np.random.RandomState(0)
  values = {name: rng.normal(0.0, 1.0, shape).astype(np.float32)
            for name, shape in {**tpu_variables(), **EXTRAS}.items()}
  values["global_step"] = np.int64(1000)
  prefix = str(tmp_path_factory.mktemp("tpu") / "model.ckpt-1000")
  with tf.Graph().as_default():
    for name, value in values.items():
      tf.compat.v1.get_variable(name, initializer=tf.constant(value))
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      saver.save(sess, prefix, write_meta_graph=False)
  return prefix, values


def _model(num_classes: int = NUM_CLASSES):
  return build_model(ModelConfig(
      num_classes=num_classes, input_size=[128, 128], backbone=BackboneConfig(depth=10),
      decoder=DecoderConfig(type="nasfpn", filters=FILTERS, num_repeats=REPEATS),
      head=HeadConfig(filters=HEAD_FILTERS, num_convs=NUM_CONVS)))


def test_every_variable_is_filled_from_its_tf1_name(tpu_checkpoint):
  prefix, values = tpu_checkpoint
  model = _model()
  report = checkpoint_import.load_checkpoint(model, prefix)
  assert report.source == "tpu"  # detected: no object-graph keys
  assert report.filled == len(model.weights) - len(model.detection_generator.weights)
  assert report.left == {} and report.unused == sorted(EXTRAS)
  b, d, h = model.backbone.get_layer, model.decoder, model.head
  pairs = {  # derived by hand from the tensorflow/tpu code (see the module docstring)
      "resnet10/conv2d/kernel": b("stem_conv").kernel,
      "resnet10/conv2d_4/kernel": b("c3_block0_proj").kernel,
      "resnet10/conv2d_12/kernel": b("c5_block0_conv2").kernel,
      "resnet10/batch_normalization_12/moving_variance": b("c5_block0_bn2").moving_variance,
      "resnet10/batch_normalization_4/beta": b("c3_block0_proj_bn").beta,
      "resample_l5/conv2d/bias": d.input_resamplers["P5"].conv.bias,
      "resample_l3/bn/moving_mean": d.input_resamplers["P3"].norm.moving_mean,
      "fpn_cells/cell_1/sub_policy6/op_after_combine11/conv/kernel": d.cells[1][6][0].conv.kernel,
      "fpn_cells/cell_0/sub_policy2/op_after_combine7/bn/gamma": d.cells[0][2][0].norm.gamma,
      "retinanet/class_net/class-0/kernel": h.class_convs[0].kernel,
      "retinanet/class_net/class-1-4/gamma": h.class_norms["P4"][1].gamma,
      "retinanet/box_net/box-0-7/moving_variance": h.box_norms["P7"][0].moving_variance,
      "retinanet/class_net/class-predict/bias": h.classifier.bias,
      "retinanet/box_net/box-predict/kernel": h.box_regressor.kernel,
  }
  for name, var in pairs.items():
    np.testing.assert_array_equal(np.asarray(var), values[name], err_msg=name)


def test_missing_variable_fails_naming_it(tpu_checkpoint, tmp_path):
  prefix, values = tpu_checkpoint
  del values  # a checkpoint without the P4 projection: written afresh
  names = {n: s for n, s in tpu_variables().items() if not n.startswith("resample_l4/")}
  partial = str(tmp_path / "partial.ckpt")
  with tf.Graph().as_default():
    for name, shape in names.items():
      tf.compat.v1.get_variable(name, shape=shape, initializer=tf.compat.v1.zeros_initializer())
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      tf.compat.v1.train.Saver().save(sess, partial, write_meta_graph=False)
  with pytest.raises(checkpoint_import.CheckpointImportError,
                     match=r"^resample_l4/conv2d/kernel: not in .*tpu layout"):
    checkpoint_import.load_checkpoint(_model(), partial, source="tpu")
  # The backbone alone is complete.
  report = checkpoint_import.load_checkpoint(_model(), partial, modules="backbone")
  assert report.left["decoder"] > 0 and report.left["head"] > 0


def test_unreadable_checkpoint_is_one_line(tmp_path):
  with pytest.raises(checkpoint_import.CheckpointImportError, match=r"not a readable") as e:
    checkpoint_import.preflight(str(tmp_path / "nothing"), "all")
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_run_py_fine_tunes_from_a_tpu_checkpoint(tpu_checkpoint, tmp_path):
  """The user's path: another dataset (6 classes, not 3), so everything but the head."""
  prefix, _ = tpu_checkpoint
  model_dir = tmp_path / "run"
  overrides = (
      "task.model.input_size=[128,128],task.model.num_classes=6,task.model.backbone.depth=10,"
      f"task.model.backbone.width_multiplier=1.0,task.model.decoder.filters={FILTERS},"
      f"task.model.decoder.num_repeats={REPEATS},task.model.head.filters={HEAD_FILTERS},"
      f"task.model.head.num_convs={NUM_CONVS},task.init_checkpoint={prefix},"
      "task.init_checkpoint_modules=backbone_decoder,"
      f"task.train_data.embedded_dir={tmp_path / 'shapes'},task.train_data.embedded_num_images=8,"
      "task.train_data.embedded_image_size=128,task.train_data.global_batch_size=4,"
      "trainer.train_steps=2,trainer.validation_interval=2,trainer.checkpoint_interval=2,"
      "trainer.backup_interval=2,trainer.learning_rate.warmup_steps=1")
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--mode=train", f"--model_dir={model_dir}",
         f"--params_override={overrides}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "tpu checkpoint, modules=backbone_decoder" in proc.stdout
  assert (model_dir / "model.keras").exists()
  # A wrong prefix: one line, nothing written into the model folder.
  bad_dir = tmp_path / "bad"
  cmd[-2:] = [f"--model_dir={bad_dir}",
              f"--params_override={overrides.replace(prefix, str(tmp_path / 'no_such'))}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "Traceback" not in proc.stderr and not bad_dir.exists()
