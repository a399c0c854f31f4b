"""Mixed precision, XLA and several steps per execution go through the same trainer."""

import keras
import numpy as np
import pytest

from nasfpn_tf import trainer
from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.configs.loading import load_config
from tests.distribute import _helpers as h


@pytest.fixture(autouse=True)
def _restore_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


def _config(tmp_path, extra: str):
  schedule = "trainer.train_steps=4,trainer.validation_interval=4,trainer.backup_interval=2"
  return load_config("", [f"{h.TINY_MODEL},{h.tiny_data(str(tmp_path / 'data'), batch=2)},"
                          f"{schedule},{extra}"])


@pytest.mark.slow
def test_float16_trains_with_loss_scaling(tmp_path):
  result = trainer.train(_config(tmp_path, "runtime.mixed_precision_dtype=float16"),
                         str(tmp_path / "m"), verbose=0)
  assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
  assert result.model.compute_dtype == "float16" and result.model.variable_dtype == "float32"
  assert result.model.jit_compile is False
  assert result.steps == 4 and np.all(np.isfinite(result.history["loss"]))


@pytest.mark.slow
def test_bfloat16_xla_and_steps_per_execution(tmp_path):
  config = _config(tmp_path, "runtime.mixed_precision_dtype=bfloat16,runtime.jit_compile=true,"
                             "runtime.steps_per_execution=2")
  result = trainer.train(config, str(tmp_path / "m"), verbose=0)
  assert not isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
  assert result.model.compute_dtype == "bfloat16"
  # XLA is on: Keras turns jit_compile off by itself (model_supports_jit) when the model or
  # the platform cannot be compiled, and says so only in a log line.
  assert result.model.jit_compile is True
  assert result.model.steps_per_execution == 2
  assert result.steps == 4 and np.all(np.isfinite(result.history["loss"]))


def test_steps_per_execution_must_divide_the_intervals(tmp_path):
  with pytest.raises(ConfigError, match="runtime.steps_per_execution = 3"):
    trainer.train(_config(tmp_path, "runtime.steps_per_execution=3"), str(tmp_path / "m"))
