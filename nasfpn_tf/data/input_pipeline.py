"""tf.data pipelines: raw examples -> augmented, resized images + RetinaNet targets.

Every source (embedded shapes, COCO json + images, TFDS, TFRecords) yields the
same raw examples (see docs/design.md); this module does the rest, as Model
Garden does: flip, scale jitter, resize and pad, anchor labelling, batching.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from nasfpn_tf.configs.experiment import ConfigError, DataConfig, ModelConfig
from nasfpn_tf.data import coco_reader, preprocess, tfds_reader, tfrecord
from nasfpn_tf.data.coco_reader import SourceInfo
from nasfpn_tf.ops.anchor import AnchorGenerator
from nasfpn_tf.ops.target_assigner import TargetAssigner


def embedded_paths(config: DataConfig) -> tuple[str, str]:
  """Generates the embedded shapes split if missing; returns (annotation_file, image_dir)."""
  from nasfpn_tf.data import shapes_dataset
  root = os.path.expanduser(config.embedded_dir)
  return shapes_dataset.ensure_shapes_dataset(
      root, config.embedded_split, config.embedded_num_images,
      image_size=config.embedded_image_size, seed=config.embedded_seed)


def coco_paths(config: DataConfig) -> tuple[str, str]:
  """(annotation_file, image_dir) of a json-backed source; ("", "") for others."""
  if config.source == "embedded":
    return embedded_paths(config)
  if config.source == "coco":
    if not config.annotation_file or not config.image_dir:
      raise ConfigError("annotation_file", "data.source=coco needs annotation_file and "
                        f"image_dir (got '{config.annotation_file}', '{config.image_dir}')")
    return config.annotation_file, config.image_dir
  return "", ""


def _shard_index(index: list, input_context: Optional[tf.distribute.InputContext]) -> list:
  if input_context is None or input_context.num_input_pipelines == 1:
    return index
  shard = index[input_context.input_pipeline_id::input_context.num_input_pipelines]
  if not shard:
    raise ConfigError("source", f"{len(index)} images cannot feed "
                      f"{input_context.num_input_pipelines} input pipelines")
  return shard


def raw_dataset(config: DataConfig, input_context: Optional[tf.distribute.InputContext] = None,
                ) -> tuple[tf.data.Dataset, SourceInfo]:
  """The source named by `config.source`, as raw examples (shuffled when training).

  With an `input_context` of several input pipelines (multi-worker training), each pipeline
  keeps its own share of the images, chosen before any image is read or decoded, and before
  shuffling, so that the shards of all workers partition the dataset whatever their seeds.
  """
  shuffle = config.is_training
  seed = 0 if config.deterministic else None
  if config.source in ("embedded", "coco"):
    annotation_file, image_dir = coco_paths(config)
    index, info = coco_reader.load_coco_index(annotation_file, image_dir,
                                              on_bad=config.on_bad_annotation)
    index = _shard_index(index, input_context)
    if shuffle and config.deterministic:
      # One seeded order, the same for every pass and every iterator: a reshuffling
      # dataset's order would depend on how many iterators were made before (a data
      # inspection, a strategy's copy of the pipeline), and so on the strategy.
      index = [index[i] for i in np.random.default_rng(seed).permutation(len(index))]
      shuffle = False
    return coco_reader.dataset_from_index(index, shuffle=shuffle, seed=seed), info
  sharded = input_context is None
  if config.source == "tfds":
    ds, info = tfds_reader.tfds_dataset(config.tfds_name, config.tfds_split,
                                        config.tfds_data_dir or None, config.tfds_download,
                                        shuffle_files=shuffle)
  elif config.source == "tfrecord":
    ds, info = tfrecord.tfrecord_dataset(config.tfrecord_pattern, shuffle_files=shuffle,
                                         input_context=input_context)
    sharded = True
  else:
    raise ConfigError("source", f"unknown source '{config.source}'")
  if not sharded:
    # TFDS decodes before we see the examples; sharding here is correct, only not free.
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if shuffle:
    ds = ds.shuffle(config.shuffle_buffer_size, seed=seed,
                    reshuffle_each_iteration=not config.deterministic)
  return ds, info


class Parser:
  """Turns one raw example into (image, labels) for the model.

  Training labels: {"cls_targets", "box_targets"}. Evaluation labels add
  "image_id" and "image_info" so detections can be mapped back to the original image.
  """

  def __init__(self, model: ModelConfig, data: DataConfig):
    self.output_size = list(model.input_size)
    self.data = data
    anchors = AnchorGenerator(model.min_level, model.max_level, model.anchor.num_scales,
                              model.anchor.aspect_ratios, model.anchor.anchor_size)
    self.assigner = TargetAssigner(anchors.flat(self.output_size),
                                   model.matcher.positive_threshold,
                                   model.matcher.negative_threshold)

  def __call__(self, example: dict[str, Any]):
    image, boxes, classes = example["image"], example["boxes"], example["classes"]
    training = self.data.is_training
    if training and self.data.aug_rand_hflip:
      image, boxes = preprocess.random_horizontal_flip(image, boxes)
    scale_min, scale_max = ((self.data.aug_scale_min, self.data.aug_scale_max) if training
                            else (1.0, 1.0))
    image, image_info = preprocess.resize_and_crop_image(image, self.output_size,
                                                         scale_min, scale_max)
    boxes, valid = preprocess.resize_and_crop_boxes(boxes, image_info, self.output_size)
    boxes = tf.boolean_mask(boxes, valid)
    classes = tf.boolean_mask(classes, valid)
    boxes, classes = boxes[:self.data.max_num_instances], classes[:self.data.max_num_instances]
    cls_targets, box_targets = self.assigner(boxes, classes)
    labels = {"cls_targets": cls_targets, "box_targets": box_targets}
    if not training:
      labels["image_id"] = tf.cast(example["image_id"], tf.int64)
      labels["image_info"] = image_info
    image = tf.ensure_shape(image, [*self.output_size, 3])
    return image, labels


def build_dataset(data: DataConfig, model: ModelConfig,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  ) -> tuple[tf.data.Dataset, SourceInfo]:
  """The batched dataset for `model.fit` / `model.evaluate` and its source info.

  Training data repeats forever and is shuffled; evaluation data is one pass, in order.
  With an `input_context` (per-worker datasets), the batch is the per-replica batch
  and the data are sharded by worker.
  """
  ds, info = raw_dataset(data, input_context)
  batch_size = data.global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if data.cache:
    # Cache decoded examples, then reshuffle every epoch (a cache replays one order).
    ds = ds.cache()
    if data.is_training and not data.deterministic:
      ds = ds.shuffle(data.shuffle_buffer_size)
  if data.is_training:
    ds = ds.repeat()
  options = tf.data.Options()
  options.deterministic = data.deterministic or not data.is_training
  if input_context is not None:
    # Sharded above, before decoding; tf.distribute must not shard a second time.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  ds = ds.with_options(options)
  ds = ds.map(Parser(model, data), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=data.is_training)
  return ds.prefetch(tf.data.AUTOTUNE), info
