"""Optimizer and learning-rate schedule from `TrainerConfig` (Model Garden's recipe)."""

from __future__ import annotations

import keras
from keras import ops

from nasfpn_tf.configs.experiment import LearningRateConfig, TrainerConfig


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from `warmup_lr` to the wrapped schedule's value at `warmup_steps`.

  Large-batch SGD diverges in its first steps without it (Goyal et al. 2017).
  """

  def __init__(self, after: keras.optimizers.schedules.LearningRateSchedule,
               warmup_steps: int, warmup_lr: float):
    self.after, self.warmup_steps, self.warmup_lr = after, warmup_steps, warmup_lr

  def __call__(self, step):
    step = ops.cast(step, "float32")
    target = self.after(self.warmup_steps)
    frac = ops.minimum(step / max(self.warmup_steps, 1), 1.0)
    warm = self.warmup_lr + (target - self.warmup_lr) * frac
    return ops.where(step < self.warmup_steps, warm, self.after(step))

  def get_config(self) -> dict:
    return {"after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr}

  @classmethod
  def from_config(cls, config: dict) -> "WarmupSchedule":
    config = dict(config)
    config["after"] = keras.saving.deserialize_keras_object(config["after"])
    return cls(**config)


def scaled_lr(config: LearningRateConfig, global_batch_size: int) -> float:
  """Linear scaling rule: the configured rate is for `base_batch_size` images."""
  return config.base_lr * global_batch_size / config.base_batch_size


def build_schedule(config: LearningRateConfig, global_batch_size: int, train_steps: int):
  lr = scaled_lr(config, global_batch_size)
  if config.type == "stepwise":
    values = [lr * config.decay_factor ** i for i in range(len(config.boundaries) + 1)]
    after = keras.optimizers.schedules.PiecewiseConstantDecay(list(config.boundaries), values)
  elif config.type == "cosine":
    after = keras.optimizers.schedules.CosineDecay(lr, max(train_steps, 1))
  else:
    after = keras.optimizers.schedules.PiecewiseConstantDecay([train_steps], [lr, lr])
  if config.warmup_steps <= 0:
    return after
  warmup_lr = min(config.warmup_lr * global_batch_size / config.base_batch_size, lr)
  return WarmupSchedule(after, config.warmup_steps, warmup_lr)


@keras.saving.register_keras_serializable(package="nasfpn_tf")
class FusedSGD(keras.optimizers.SGD):
  """`keras.optimizers.SGD`, its momentum update done by one TensorFlow kernel per variable.

  Keras 3 updates each variable with five ops (two multiplies, a subtract, two assigns);
  TensorFlow's `ResourceApplyKerasMomentum` computes the same (m = momentum * m - lr * g,
  then v += m; Nesterov: v += momentum * m - lr * g) in one kernel, as tf-keras' SGD did.
  Same arithmetic, so same weights (tests/training/test_fused_sgd.py). Without momentum,
  or off the TensorFlow backend, it is Keras' SGD.
  """

  def update_step(self, gradient, variable, learning_rate):
    if self.momentum == 0 or keras.backend.backend() != "tensorflow":
      return super().update_step(gradient, variable, learning_rate)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    var = variable.value if isinstance(variable, keras.Variable) else variable
    momentum = self.momentums[self._get_variable_index(variable)].value
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=var.handle, accum=momentum.handle,
        lr=tf.cast(learning_rate, var.dtype), grad=tf.cast(gradient, var.dtype),
        momentum=tf.cast(self.momentum, var.dtype), use_locking=False,
        use_nesterov=self.nesterov)
    return None


def decay_in_loss(config: TrainerConfig) -> bool:
  """Whether `task.losses.l2_weight_decay` goes into the loss (Model Garden: SGD, Adam) or is
  AdamW's decoupled decay (AdamW's definition)."""
  return config.optimizer.type != "adamw"


def build_optimizer(config: TrainerConfig, global_batch_size: int,
                    weight_decay: float = 1e-4) -> keras.optimizers.Optimizer:
  """SGD with momentum (default), Adam or AdamW.

  `weight_decay` is used by AdamW only, as its decoupled decay (skipping batch-norm
  parameters and biases); for SGD and Adam it is an l2 term of the loss, as in Model Garden
  (`RetinaNetModel.l2_weight_decay`), so that it goes through momentum like the gradient.
  """
  schedule = build_schedule(config.learning_rate, global_batch_size, config.train_steps)
  opt = config.optimizer
  common = {"learning_rate": schedule, "clipnorm": opt.clipnorm}
  if opt.type == "sgd":
    sgd = FusedSGD if opt.fused else keras.optimizers.SGD
    return sgd(momentum=opt.momentum, **common)
  if opt.type == "adam":
    return keras.optimizers.Adam(**common)
  optimizer = keras.optimizers.AdamW(weight_decay=weight_decay, **common)
  optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
  return optimizer
