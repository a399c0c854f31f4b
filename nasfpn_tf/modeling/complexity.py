"""What `run.py --mode=describe` reports: parameter counts and multiply-adds, the numbers users
compare with the paper's table, and a one-line name of the decoder.

TensorFlow is imported inside the functions that need it, so that naming a decoder (for the
drawings' titles) stays cheap.
"""

from __future__ import annotations

import dataclasses

from nasfpn_tf.architecture_spec import spec_label
from nasfpn_tf.configs.experiment import ModelConfig

_PARTS = ("backbone", "decoder", "head")


def decoder_summary(config: ModelConfig) -> str:
  """The decoder in words: "NAS-FPN, spec nasfpn, 3 repeats x 64 filters, P3-P7"."""
  d, levels = config.decoder, f"P{config.min_level}-P{config.max_level}"
  if d.type == "fpn":
    return f"FPN, {d.filters} filters, {levels}"
  repeats = "1 repeat" if d.num_repeats == 1 else f"{d.num_repeats} repeats"
  label = spec_label(d.spec, config.min_level, config.max_level)
  return f"NAS-FPN, spec {label}, {repeats} x {d.filters} filters, {levels}"


def forward_macs(model, input_size) -> int:
  """Multiply-adds of one forward pass (batch 1, no post-processing), from TF's
  graph profiler: it counts 2 FLOPs per multiply-add, so halve."""
  import tensorflow as tf
  from tensorflow.python.framework.convert_to_constants import (
      convert_variables_to_constants_v2)
  from tensorflow.python.profiler import model_analyzer, option_builder
  from tensorflow.python.util import deprecation

  fn = tf.function(lambda x: model(x, training=False))
  concrete = fn.get_concrete_function(tf.TensorSpec([1, *input_size, 3], tf.float32))
  frozen = convert_variables_to_constants_v2(concrete)
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  # The profiler's own FLOP counters (tensorflow/python/profiler/internal/flops_registry.py)
  # call the deprecated graph_util.tensor_shape_from_node_def_name: a warning about TF's
  # code that a user can do nothing about, so it is silenced for this call only.
  with deprecation.silence():
    profile = model_analyzer.profile(frozen.graph, options=opts)
  return int(profile.total_float_ops // 2)


def describe_model(config: ModelConfig) -> dict:
  """{"params_total", "params_backbone", "params_decoder", "params_head", "macs", ...}.

  Counts are trainable parameters; the `*_all` keys add batch-norm moving statistics
  (the convention of Model Garden's reported totals). Also: "input_size"; "backbone",
  "decoder" (`decoder_summary`) and "head" in words; "decoder_type", "decoder_spec"
  (`spec_label`, "" for FPN), "num_repeats", "filters".
  """
  from nasfpn_tf.modeling.factory import build_model, count_params

  # Counts do not depend on the weights: never download or read a backbone checkpoint here.
  config = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone,
                                                                    weights_path=""))
  model = build_model(config)
  out = count_params(model)
  out["macs"] = forward_macs(model, config.input_size)
  out["input_size"] = list(config.input_size)
  b, h, d = config.backbone, config.head, config.decoder
  width = f" x{b.width_multiplier:g} width" if b.width_multiplier != 1 else ""
  out["backbone"] = (f"MobileNetV2{width}" if b.type == "mobilenet_v2"
                     else f"ResNet-{b.depth}{width}")
  out["head"] = f"{h.num_convs} convs x {h.filters} filters, {config.num_classes} classes"
  out["decoder"] = decoder_summary(config)
  out["decoder_type"] = d.type
  out["decoder_spec"] = (spec_label(d.spec, config.min_level, config.max_level)
                         if d.type == "nasfpn" else "")
  out["num_repeats"] = d.num_repeats if d.type == "nasfpn" else 1
  out["filters"] = d.filters
  return out


def format_description(description: dict) -> str:
  """`describe_model`'s dict as the table `run.py --mode=describe` prints."""
  d = description
  height, width = d["input_size"]
  rows = [("part", "parameters", "with BN statistics")]
  rows += [(part, f"{d[f'params_{part}']:,}", f"{d[f'params_{part}_all']:,}") for part in _PARTS]
  rows.append(("total", f"{d['params_total']:,}", f"{d['params_total_all']:,}"))
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  lines = [f"backbone: {d['backbone']}", f"decoder:  {d['decoder']}", f"head:     {d['head']}",
           f"input:    {height} x {width}", ""]
  for k, row in enumerate(rows):
    lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
    if k == 0 or k == len(rows) - 2:
      lines.append("  ".join("-" * w for w in widths))
  giga = d["macs"] / 1e9
  # Two decimals for real models (140.34 G), three significant digits for tiny ones (0.0123 G).
  giga_text = f"{giga:.2f}" if giga >= 1 else f"{giga:.3g}"
  lines += ["", f"multiply-adds: {giga_text} G (one {height} x {width} image, "
                "network only, without post-processing)"]
  return "\n".join(lines)
