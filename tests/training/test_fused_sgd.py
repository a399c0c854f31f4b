"""FusedSGD: one fused kernel per variable, the same weights as Keras' SGD."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf.optimization import FusedSGD

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(make_optimizer, strategy=None, steps=4):
  """Weights and momentum after `steps` fits of a small conv net on fixed data."""
  strategy = strategy or tf.distribute.get_strategy()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
  y = rng.normal(size=(8, 4)).astype(np.float32)
  with strategy.scope():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(5, 3),
                              keras.layers.BatchNormalization(), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    model.compile(optimizer=make_optimizer(), loss="mse")
  model.fit(x, y, batch_size=4, epochs=steps // 2, shuffle=False, verbose=0)
  return ([v.numpy() for v in model.trainable_variables],
          [v.numpy() for v in model.optimizer.variables])


@pytest.mark.parametrize("nesterov", [False, True])
def test_same_weights_and_momentum_as_keras_sgd(nesterov):
  schedule = keras.optimizers.schedules.CosineDecay(0.1, 10)
  want_w, want_m = _train(
      lambda: keras.optimizers.SGD(schedule, momentum=0.9, nesterov=nesterov))
  got_w, got_m = _train(lambda: FusedSGD(schedule, momentum=0.9, nesterov=nesterov))
  start_w, _ = _train(lambda: FusedSGD(schedule, momentum=0.9, nesterov=nesterov), steps=0)
  assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(got_w, start_w))  # it trained
  for a, b in zip(got_w + got_m, want_w + want_m):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


MIRRORED = """
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.training.test_fused_sgd import _train
from nasfpn_tf.optimization import FusedSGD
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
want, _ = _train(lambda: keras.optimizers.SGD(0.05, momentum=0.9), mirrored)
got, _ = _train(lambda: FusedSGD(0.05, momentum=0.9), mirrored)
print("WORST", max(float(np.abs(a - b).max()) for a, b in zip(got, want)))
"""


def test_mirrored_two_replicas_same_weights_as_keras_sgd():
  proc = subprocess.run([sys.executable, "-c", MIRRORED], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  worst = float(proc.stdout.split("WORST")[-1])
  assert worst < 1e-6, worst


def test_the_update_is_one_kernel_and_the_config_round_trips():
  opt = FusedSGD(0.1, momentum=0.9)
  var = keras.Variable(np.ones((3,), np.float32))
  opt.build([var])
  graph = tf.function(lambda g: opt.apply_gradients([(g, var)])).get_concrete_function(
      tf.TensorSpec((3,), tf.float32)).graph
  ops = {op.type for op in graph.get_operations()}
  assert "ResourceApplyKerasMomentum" in ops
  again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
  assert type(again) is FusedSGD and again.momentum == pytest.approx(0.9)


def test_the_trainer_config_picks_fused_or_keras_sgd():
  from nasfpn_tf.configs.experiment import TrainerConfig
  from nasfpn_tf.optimization import build_optimizer

  config = TrainerConfig()
  assert type(build_optimizer(config, 16)) is FusedSGD
  config.optimizer.fused = False
  assert type(build_optimizer(config, 16)) is keras.optimizers.SGD
  config.optimizer.type = "adam"   # `fused` only concerns SGD
  assert type(build_optimizer(config, 16)) is keras.optimizers.Adam
