"""Parameter counts and multiply-adds: the numbers users compare with the paper's table."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from nasfpn_tf.configs.experiment import ModelConfig
from nasfpn_tf.modeling.factory import build_model, count_params


def forward_macs(model: tf.keras.Model, input_size) -> int:
  """Multiply-adds of one forward pass (batch 1, no post-processing), from TF's
  graph profiler: it counts 2 FLOPs per multiply-add, so halve."""
  from tensorflow.python.framework.convert_to_constants import (
      convert_variables_to_constants_v2)
  from tensorflow.python.profiler import model_analyzer, option_builder

  fn = tf.function(lambda x: model(x, training=False))
  concrete = fn.get_concrete_function(tf.TensorSpec([1, *input_size, 3], tf.float32))
  frozen = convert_variables_to_constants_v2(concrete)
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  profile = model_analyzer.profile(frozen.graph, options=opts)
  return int(profile.total_float_ops // 2)


def describe_model(config: ModelConfig) -> dict:
  """{"params_total", "params_backbone", "params_decoder", "params_head", "macs", ...}.

  Counts are trainable parameters; the `*_all` keys add batch-norm moving statistics
  (the convention of Model Garden's reported totals).
  """
  # Counts do not depend on the weights: never download or read a backbone checkpoint here.
  config = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone,
                                                                    weights_path=""))
  model = build_model(config)
  out = count_params(model)
  out["macs"] = forward_macs(model, config.input_size)
  out["input_size"] = list(config.input_size)
  return out
