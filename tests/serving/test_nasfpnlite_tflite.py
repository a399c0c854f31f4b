"""NAS-FPNLite trains a few steps and exports to every TFLite variant with builtin ops only.

The op list is read from the flatbuffer itself (its operator codes), so a Flex or custom op
fails the test even where an interpreter would refuse to load the file only on a device.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.serving import export_lib

# MobileNetV2 x0.35 + separable NAS-FPN 1@16 + a separable 1 x 16 head, 128 px: the smallest
# model with every NAS-FPNLite part.
LITE_MODEL = ("task.model.num_classes=6,task.model.input_size=[128,128],"
              "task.model.backbone.type=mobilenet_v2,task.model.backbone.width_multiplier=0.35,"
              "task.model.decoder.type=nasfpn,task.model.decoder.filters=16,"
              "task.model.decoder.num_repeats=1,task.model.decoder.use_separable_conv=true,"
              "task.model.head.filters=16,task.model.head.num_convs=1,"
              "task.model.head.use_separable_conv=true,task.model.detection.pre_nms_top_k=200")
_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def tflite_operators(data: bytes) -> list[str]:
  """Operator codes of a .tflite flatbuffer: builtin names, or "custom:<code>" for others."""
  model = schema.Model.GetRootAsModel(data, 0)
  ops = []
  for i in range(model.OperatorCodesLength()):
    code = model.OperatorCodes(i)
    # Builtin codes above 127 live in BuiltinCode; older files use DeprecatedBuiltinCode.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema.BuiltinOperator.CUSTOM:
      ops.append(f"custom:{code.CustomCode().decode()}")
    else:
      ops.append(_BUILTIN_NAMES[builtin])
  return ops


def test_operator_parser_sees_custom_ops():
  """The parser is what the builtin-only check relies on: it must name a Flex op."""
  import tensorflow as tf

  @tf.function(input_signature=[tf.TensorSpec([2], tf.string)])
  def join(x):
    return tf.strings.reduce_join(x)

  converter = tf.lite.TFLiteConverter.from_concrete_functions([join.get_concrete_function()],
                                                              join)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                         tf.lite.OpsSet.SELECT_TF_OPS]
  assert tflite_operators(converter.convert()) == ["custom:FlexReduceJoin"]


@pytest.mark.slow  # about 2 min on 2 cores: four conversions, one of them calibrated
def test_nasfpnlite_trains_and_exports_builtin_ops_only(tmp_path):
  from nasfpn_tf.trainer import train_and_evaluate
  data = f"embedded_dir={tmp_path / 'shapes'},embedded_image_size=128,global_batch_size=4"
  config = load_config(params_override=[
      LITE_MODEL,
      ",".join(f"task.train_data.{kv}" for kv in data.split(",")) +
      ",task.train_data.embedded_num_images=16",
      ",".join(f"task.validation_data.{kv}" for kv in data.split(",")) +
      ",task.validation_data.embedded_num_images=8",
      "trainer.train_steps=4,trainer.validation_interval=4,trainer.checkpoint_interval=4,"
      "trainer.learning_rate.warmup_steps=2",
  ])
  model_dir = str(tmp_path / "model")
  train_and_evaluate(config, model_dir, mode="train", verbose=0)
  out = str(tmp_path / "export")
  export_lib.export_from_model_dir(model_dir, out, "tflite", num_calibration_images=8)
  for variant in export_lib.TFLITE_VARIANTS:
    with open(export_lib.tflite_path(out, variant), "rb") as f:
      ops = tflite_operators(f.read())
    custom = [op for op in ops if op.startswith("custom:")]
    assert not custom, f"{variant}: non-builtin ops {custom}"
    # The separable convs and the in-graph NMS are there, as builtins.
    assert {"DEPTHWISE_CONV_2D", "CONV_2D", "NON_MAX_SUPPRESSION_V4"} <= set(ops), (variant, ops)
    detector = export_lib.TFLiteDetector(export_lib.tflite_path(out, variant))
    result = detector.detect(np.full((128, 128, 3), 127.0, np.float32))
    assert result["detection_boxes"].shape == (1, 100, 4), variant
  # A wrong shape or dtype is refused in one line naming the expected ones.
  for bad in (np.zeros((96, 128, 3), np.float32), np.zeros((128, 128, 3), np.int64)):
    with pytest.raises(ValueError, match=r"takes one preprocessed image of shape \(128, 128, "
                                         r"3\).*got shape \(\d+, 128, 3\), dtype \w+$"):
      detector.detect(bad)
  _run_readme_tflite_snippet(out, tmp_path)


def _run_readme_tflite_snippet(export_dir: str, tmp_path) -> None:
  """The README's TFLite snippet, run as written but for the model and image paths."""
  import re

  import tensorflow as tf
  from serving_helpers import ROOT
  with open(os.path.join(ROOT, "README.md")) as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  snippet = next(b for b in blocks if "get_signature_runner" in b)
  photo = str(tmp_path / "photo.jpg")
  tf.io.write_file(photo, tf.io.encode_jpeg(np.full((90, 160, 3), 200, np.uint8)))
  snippet = snippet.replace("runs/default/export", export_dir).replace("photo.jpg", photo)
  scope: dict = {}
  exec(snippet, scope)  # noqa: S102 - the documented snippet itself is under test
  assert scope["out"]["detection_boxes"].shape == (1, 100, 4)
  assert tuple(scope["image_info"].shape) == (4, 2)
