"""`runtime.mixed_precision_dtype`: what `auto` picks on which hardware, and what a model
computes in each precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf import precision
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.factory import build_model

CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 {extra}\n"


@pytest.fixture
def fake_machine(monkeypatch):
  """Sets the CPU flags and GPUs `auto` sees."""
  def make(cpu_flags="", gpus=()):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(cpu_flags.split()))
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: list(gpus))
  return make


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text(CPUINFO.format(extra="avx512_bf16 amx_tile"))
  assert {"sse2", "avx512_bf16", "amx_tile"} <= precision.cpu_flags(str(path))
  assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("flags,expected", [
    ("", "float32"),
    ("avx512f avx512bw", "float32"),       # AVX-512 without its BF16 extension
    ("avx512_bf16", "bfloat16"),
    ("amx_bf16 amx_tile", "bfloat16"),
])
def test_auto_on_cpus(fake_machine, flags, expected):
  fake_machine(flags)
  assert precision.resolve("auto")[0] == expected


@pytest.mark.parametrize("gpus,expected", [
    ([(7, 0)], "float32"),                 # V100: no bfloat16
    ([(8, 0)], "bfloat16"),                # A100
    ([(9, 0), (9, 0)], "bfloat16"),
    ([(8, 6), (7, 5)], "float32"),         # mixed: the weakest decides
])
def test_auto_on_gpus_ignores_the_cpu(fake_machine, gpus, expected):
  fake_machine("amx_bf16", gpus=gpus)
  assert precision.resolve("auto")[0] == expected


def test_explicit_choices_are_kept(fake_machine):
  fake_machine("amx_bf16")
  for dtype in ("float32", "float16", "bfloat16"):
    assert precision.resolve(dtype) == (dtype, "as configured")


def test_set_policy_prints_the_choice(fake_machine, capsys):
  fake_machine("")
  try:
    assert precision.set_policy("auto") == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert "Precision: float32 (auto: CPU without AVX-512 BF16 or AMX)" in capsys.readouterr().out
    fake_machine("avx512_bf16")
    assert precision.set_policy("auto") == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert "Precision: bfloat16 (auto: CPU with avx512_bf16)" in capsys.readouterr().out
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_config_default_is_auto_and_bad_values_name_the_key():
  assert load_config().runtime.mixed_precision_dtype == "auto"
  with pytest.raises(Exception, match="mixed_precision_dtype"):
    load_config(params_override="runtime.mixed_precision_dtype=int8")


SMALL = ("task.model.num_classes=6,task.model.input_size=[128,128],task.model.backbone.depth=10,"
         "task.model.backbone.width_multiplier=0.25,task.model.decoder.filters=16,"
         "task.model.head.filters=16,task.model.head.num_convs=1,"
         "task.model.decoder.num_repeats=2")


def _float32_and_bfloat16_models(images):
  """A float32 model, its outputs on `images`, and a mixed_bfloat16 model with its weights.

  Leaves the global policy at mixed_bfloat16, as training does (the caller restores it).
  """
  config = load_config(params_override=SMALL).task.model
  keras.mixed_precision.set_global_policy("float32")
  reference = build_model(config)
  want = reference(images, training=False)
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  model = build_model(config)
  model.set_weights(reference.get_weights())
  return reference, want, model


def test_bfloat16_model_outputs_float32_close_to_the_float32_model():
  """Same weights, two policies: outputs stay float32 and within bfloat16's rounding of the
  float32 model's (8 mantissa bits: ~0.4% relative per op, a few % after ~60 layers)."""
  images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
  try:
    _, want, model = _float32_and_bfloat16_models(images)
    got = model(images, training=False)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  for key in ("cls_outputs", "box_outputs"):
    assert got[key].dtype == tf.float32
    g, w = np.asarray(got[key]), np.asarray(want[key])
    assert g.shape == w.shape
    scale = np.abs(w).max()
    err = np.abs(g - w).max() / scale
    assert 0 < err < 0.05, (key, err)   # > 0: the bf16 model really computed in bfloat16


def test_float32_copy_of_a_bfloat16_model_for_export():
  images = np.random.default_rng(1).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
  try:
    reference, want, model = _float32_and_bfloat16_models(images)
    # As after training: the global policy is still the mixed one when the export copies.
    twin = precision.float32_copy(model)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # restored
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert twin is not model and precision.float32_copy(reference) is reference
  assert {l.dtype_policy.name for l in twin._flatten_layers()} == {"float32"}
  assert twin.compute_dtype == "float32"
  got = twin(images, training=False)
  for key in ("cls_outputs", "box_outputs"):   # the float32 model again, to float32 rounding
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_float32_copy_of_a_bfloat16_model_loaded_in_a_fresh_process(tmp_path):
  """model.keras of a bfloat16 run, loaded under the float32 global policy (export/parity.py
  in its own process): the model's own policy is float32, its layers' are mixed."""
  images = np.random.default_rng(2).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
  try:
    _, want, model = _float32_and_bfloat16_models(images)
    model.save(str(tmp_path / "model.keras"))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  loaded = keras.models.load_model(str(tmp_path / "model.keras"), compile=False)
  assert "mixed_bfloat16" in {l.dtype_policy.name for l in loaded._flatten_layers()}
  twin = precision.float32_copy(loaded)
  assert twin is not loaded
  assert {l.dtype_policy.name for l in twin._flatten_layers()} == {"float32"}
  got = twin(images, training=False)
  for key in ("cls_outputs", "box_outputs"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)
