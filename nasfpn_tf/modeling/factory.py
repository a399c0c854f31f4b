"""Builds a RetinaNet from a `ModelConfig` through explicit builder maps."""

from __future__ import annotations

from typing import Callable

import keras

from nasfpn_tf.configs.experiment import ModelConfig
from nasfpn_tf.modeling.backbones.mobilenet_v2 import build_mobilenet_v2
from nasfpn_tf.modeling.backbones.resnet import build_resnet
from nasfpn_tf.modeling.decoders.fpn import FPN
from nasfpn_tf.modeling.decoders.nasfpn import NasFpn
from nasfpn_tf.modeling.decoders.nasfpn_supernet import NasFpnSupernet
from nasfpn_tf.modeling.heads.retinanet_head import RetinaNetHead
from nasfpn_tf.modeling.layers.detection_generator import DetectionGenerator
from nasfpn_tf.modeling.retinanet_model import RetinaNetModel
from nasfpn_tf.modeling.supernet_model import SupernetModel
from nasfpn_tf.ops.anchor import AnchorGenerator


def _norm_kwargs(config: ModelConfig, sync_bn: bool) -> dict:
  return {"norm_momentum": config.norm.momentum, "norm_epsilon": config.norm.epsilon,
          "use_sync_bn": sync_bn}


def _build_fpn(config: ModelConfig, sync_bn: bool) -> keras.layers.Layer:
  return FPN(min_level=config.min_level, max_level=config.max_level,
             filters=config.decoder.filters, name="decoder", **_norm_kwargs(config, sync_bn))


def _build_nasfpn(config: ModelConfig, sync_bn: bool) -> keras.layers.Layer:
  d = config.decoder
  return NasFpn(spec=d.spec, filters=d.filters, num_repeats=d.num_repeats,
                min_level=config.min_level, max_level=config.max_level,
                global_pool_type=d.global_pool_type, use_dropblock=d.use_dropblock,
                dropblock_size=d.dropblock_size, dropblock_keep_prob=d.dropblock_keep_prob,
                use_separable_conv=d.use_separable_conv, name="decoder",
                **_norm_kwargs(config, sync_bn))


def _build_nasfpn_supernet(config: ModelConfig, sync_bn: bool) -> keras.layers.Layer:
  d = config.decoder
  return NasFpnSupernet(num_cells=d.num_cells, filters=d.filters, num_repeats=d.num_repeats,
                        min_level=config.min_level, max_level=config.max_level,
                        global_pool_type=d.global_pool_type, name="decoder",
                        **_norm_kwargs(config, sync_bn))


DECODERS: dict[str, Callable[[ModelConfig, bool], keras.layers.Layer]] = {
    "fpn": _build_fpn,
    "nasfpn": _build_nasfpn,
    "nasfpn_supernet": _build_nasfpn_supernet,
}
# The one-shot supernet trains one sampled path per step (see SupernetModel).
MODELS = {"nasfpn_supernet": SupernetModel}


def _build_resnet(config: ModelConfig, sync_bn: bool) -> keras.Model:
  b = config.backbone
  return build_resnet(b.depth, (*config.input_size, 3), width_multiplier=b.width_multiplier,
                      weights_path=b.weights_path, **_norm_kwargs(config, sync_bn))


def _build_mobilenet_v2(config: ModelConfig, sync_bn: bool) -> keras.Model:
  b = config.backbone
  return build_mobilenet_v2((*config.input_size, 3), width_multiplier=b.width_multiplier,
                            weights=b.weights_path, **_norm_kwargs(config, sync_bn))


BACKBONES: dict[str, Callable[[ModelConfig, bool], keras.Model]] = {
    "resnet": _build_resnet,
    "mobilenet_v2": _build_mobilenet_v2,
}


def build_backbone(config: ModelConfig, sync_bn: bool = False) -> keras.Model:
  if config.backbone.type not in BACKBONES:
    raise ValueError(f"task.model.backbone.type: '{config.backbone.type}' is not one of "
                     f"{sorted(BACKBONES)}")
  return BACKBONES[config.backbone.type](config, sync_bn)


def build_model(config: ModelConfig, sync_bn: bool = False, nms: str = "combined") -> RetinaNetModel:
  """Builds (and runs once on a symbolic input) the RetinaNet described by `config`.

  Args:
    config: the `task.model` section.
    sync_bn: synchronise batch-norm statistics across replicas.
    nms: "combined" (default) or "padded" (TFLite-convertible), see `DetectionGenerator`.
  """
  if config.decoder.type not in DECODERS:
    raise ValueError(f"task.model.decoder.type: '{config.decoder.type}' is not one of "
                     f"{sorted(DECODERS)}")
  anchors = AnchorGenerator(config.min_level, config.max_level, config.anchor.num_scales,
                            config.anchor.aspect_ratios, config.anchor.anchor_size)
  head = RetinaNetHead(
      config.min_level, config.max_level, config.num_classes, anchors.anchors_per_location,
      num_convs=config.head.num_convs, filters=config.head.filters,
      prior_probability=config.head.prior_probability,
      use_separable_conv=config.head.use_separable_conv, name="head",
      **_norm_kwargs(config, sync_bn))
  det = config.detection
  level_sizes = [len(a) for a in anchors(config.input_size).values()]
  detection_generator = DetectionGenerator(
      level_sizes, config.input_size, pre_nms_top_k=det.pre_nms_top_k,
      score_threshold=det.score_threshold, iou_threshold=det.iou_threshold,
      max_detections=det.max_detections, nms=nms, name="detection_generator")
  model_cls = MODELS.get(config.decoder.type, RetinaNetModel)
  model = model_cls(
      build_backbone(config, sync_bn), DECODERS[config.decoder.type](config, sync_bn), head,
      num_classes=config.num_classes, input_size=config.input_size,
      min_level=config.min_level, max_level=config.max_level, anchor_generator=anchors,
      detection_generator=detection_generator, name="retinanet")
  model(keras.ops.zeros((1, *config.input_size, 3)))
  return model


def count_params(model: RetinaNetModel) -> dict[str, int]:
  """Parameter counts per part. `*_all` includes batch-norm moving statistics, which is
  what Model Garden's reported counts include."""
  parts = {"backbone": model.backbone, "decoder": model.decoder, "head": model.head}
  out = {}
  for name, part in parts.items():
    out[f"params_{name}"] = int(sum(w.numpy().size for w in part.trainable_weights))
    out[f"params_{name}_all"] = int(sum(w.numpy().size for w in part.weights))
  out["params_total"] = sum(out[f"params_{n}"] for n in parts)
  out["params_total_all"] = sum(out[f"params_{n}_all"] for n in parts)
  return out
