"""Constants and helpers shared by the serving tests (imported by conftest.py and tests)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from nasfpn_tf.configs.loading import load_config

# A tiny FPN RetinaNet on the embedded shapes set at 128 px; Adam reaches AP ~0.1 in 400 steps.
SMALL_MODEL = ("task.model.num_classes=6,task.model.input_size=[128,128],"
               "task.model.backbone.depth=10,task.model.backbone.width_multiplier=0.25,"
               "task.model.decoder.type=fpn,task.model.decoder.filters=32,"
               "task.model.head.filters=32,task.model.head.num_convs=1,"
               "task.model.detection.pre_nms_top_k=1000")
NUM_VAL_IMAGES = 40
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_config(data_dir: str, train_steps: int = 400):
  """The test experiment: SMALL_MODEL on embedded data written under `data_dir`."""
  data = f"embedded_dir={data_dir},embedded_image_size=128,global_batch_size=16"
  overrides = [
      SMALL_MODEL,
      ",".join(f"task.train_data.{kv}" for kv in data.split(",")) +
      ",task.train_data.embedded_num_images=256",
      ",".join(f"task.validation_data.{kv}" for kv in data.split(",")) +
      f",task.validation_data.embedded_num_images={NUM_VAL_IMAGES}",
      f"trainer.train_steps={train_steps},trainer.validation_interval={train_steps},"
      f"trainer.checkpoint_interval={train_steps},trainer.optimizer.type=adam,"
      "trainer.learning_rate.type=cosine,trainer.learning_rate.base_lr=0.01,"
      "trainer.learning_rate.warmup_steps=50",
      # Parity bounds below compare float32 with float32: exports always compute in float32,
      # and `auto` would train (and save) the Keras model in bfloat16 on AMX CPUs.
      "runtime.mixed_precision_dtype=float32",
  ]
  return load_config(params_override=overrides)


_PARITY = None


def parity_module():
  """export/parity.py as a module (loaded once: it defines absl flags)."""
  global _PARITY
  if _PARITY is None:
    from tests.run_helpers import load_script
    _PARITY = load_script("nasfpn_parity", os.path.join(ROOT, "export", "parity.py"))
  return _PARITY


def operator_names(path: str) -> set[str]:
  """Names of the operators a .tflite file uses, read from its flatbuffer (all subgraphs):
  builtin names, or the custom code of a custom/Flex op."""
  from tensorflow.lite.python import schema_py_generated
  with open(path, "rb") as f:
    model = schema_py_generated.Model.GetRootAs(f.read(), 0)
  names = {code: name for name, code in vars(schema_py_generated.BuiltinOperator).items()
           if name.isupper()}
  out = set()
  for i in range(model.OperatorCodesLength()):
    code = model.OperatorCodes(i)
    custom = code.CustomCode()
    out.add(custom.decode() if custom else names[max(code.BuiltinCode(),
                                                     code.DeprecatedBuiltinCode())])
  return out


def builtin_op_names() -> set[str]:
  """Every TFLite builtin operator name (a plain interpreter runs these)."""
  from tensorflow.lite.python import schema_py_generated
  return {k for k in vars(schema_py_generated.BuiltinOperator) if k.isupper()}


def non_square(image: np.ndarray, height: int = 96, width: int = 160) -> np.ndarray:
  """A uint8 image of another shape made from `image` (resized), for mapping-back tests."""
  from PIL import Image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
