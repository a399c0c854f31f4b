"""Which precision a run computes in: `runtime.mixed_precision_dtype`, `auto` resolved.

`auto` picks bfloat16 where the hardware computes it natively and float32 elsewhere:
  TPU                                   bfloat16 (the MXU's native type)
  GPU with compute capability >= 8.0    bfloat16 (Ampere and later)
  CPU with AVX-512 BF16 or AMX-BF16     bfloat16 (oneDNN's bf16 kernels)
  anything else                         float32
float16 is never chosen automatically: it needs loss scaling and is slow on CPUs.

Why bfloat16 is safe to choose: variables, the loss and the head's outputs stay float32
(Keras' mixed policies; RetinaNetModel casts the outputs). On this project's 2-core CPU with
AMX, the embedded default trains at 0.35 s per step in bfloat16 against 0.72 s in float32; the
AP comparison (README, "Precision") is what made `auto` the default.
"""

import re
from typing import Optional

from absl import logging
import keras
import tensorflow as tf

AUTO = "auto"
CHOICES = (AUTO, "float32", "float16", "bfloat16")
# /proc/cpuinfo flags that mean native bfloat16 arithmetic on x86 (Linux spellings).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class PrecisionError(ValueError):
  """A precision that cannot run on this hardware."""


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
  """The CPU feature flags the kernel reports; empty where there is no /proc/cpuinfo."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return frozenset()
  match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
  return frozenset(match.group(1).split()) if match else frozenset()


def gpu_compute_capabilities() -> list:
  """(major, minor) of each visible GPU; (0, 0) where TensorFlow does not say."""
  capabilities = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    capabilities.append(tuple(details.get("compute_capability", (0, 0))))
  return capabilities


def auto_dtype(strategy: Optional[tf.distribute.Strategy] = None) -> tuple[str, str]:
  """(dtype, why) that `auto` resolves to on this machine."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return "bfloat16", "TPU"
  capabilities = gpu_compute_capabilities()
  if capabilities:
    if all(c >= (8, 0) for c in capabilities):
      return "bfloat16", f"GPU with compute capability {capabilities[0][0]}.{capabilities[0][1]}"
    return "float32", "GPU without bfloat16 (compute capability < 8.0)"
  flags = cpu_flags()
  found = [f for f in _CPU_BF16_FLAGS if f in flags]
  if found:
    return "bfloat16", f"CPU with {', '.join(found)}"
  return "float32", "CPU without AVX-512 BF16 or AMX"


def resolve(dtype: str, strategy: Optional[tf.distribute.Strategy] = None) -> tuple[str, str]:
  """(float32 | float16 | bfloat16, why) for a configured `runtime.mixed_precision_dtype`."""
  if dtype == AUTO:
    return auto_dtype(strategy)
  if dtype == "float16" and isinstance(strategy, tf.distribute.TPUStrategy):
    raise PrecisionError("TPUs compute in bfloat16, not float16")
  return dtype, "as configured"


def set_policy(dtype: str, strategy: Optional[tf.distribute.Strategy] = None,
               announce: bool = True) -> str:
  """Resolves `dtype`, sets Keras' global dtype policy and returns the dtype chosen.

  Always set (float32 included), so that runs sharing a process (the search, tests) do not
  inherit each other's policy. `model.compile` wraps the optimizer in a LossScaleOptimizer
  under mixed_float16; bfloat16 has float32's range and needs no loss scaling.
  """
  chosen, why = resolve(dtype, strategy)
  if chosen == "float16" and not tf.config.list_physical_devices("GPU"):
    logging.warning("mixed_precision_dtype=float16 without a GPU: CPUs run float16 slowly")
  keras.mixed_precision.set_global_policy("float32" if chosen == "float32" else f"mixed_{chosen}")
  if announce:
    print(f"Precision: {chosen} ({'auto: ' if dtype == AUTO else ''}{why})", flush=True)
  return chosen


def _float32_policies(config):
  """`config` (a serialized model) with every mixed DTypePolicy replaced by float32."""
  if isinstance(config, dict):
    if config.get("class_name") == "DTypePolicy":
      return {**config, "config": {**config["config"], "name": "float32"}}
    return {k: _float32_policies(v) for k, v in config.items()}
  if isinstance(config, list):
    return [_float32_policies(v) for v in config]
  return config


def float32_copy(model: keras.Model) -> keras.Model:
  """`model` itself if it computes in float32, else a float32 twin with the same weights.

  Exports compute in float32 whatever the training precision: phones and TFLite's XNNPACK
  have no bfloat16 kernels, and the variables are float32 already, so nothing is lost but
  the rounding bfloat16 added in training's forward pass.
  """
  # Every layer's policy, not the model's alone: a bfloat16 model loaded from model.keras in a
  # fresh process has the float32 global policy itself (its config names none) and mixed
  # layers inside.
  original = keras.saving.serialize_keras_object(model)
  serialized = _float32_policies(original)
  if serialized == original:
    return model
  # Layers whose config names no policy (the model itself) take the global one, which is
  # still training's mixed policy when an export follows training in the same process.
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("float32")
  try:
    twin = keras.saving.deserialize_keras_object(serialized)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  twin.set_weights(model.get_weights())
  return twin
