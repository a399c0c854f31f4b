"""Raw examples as sharded TFRecord files, so large datasets stream from disk.

A COCO json source keeps the whole annotation file and the image index in memory and reads one
image file per example; TFRecords pack images and their boxes into a few large files that any
number of workers read in parallel, each its own shards (`input_context`), from local disk or
a bucket (`gs://`). `run.py --mode=make_tfrecords` writes them from any source
(`tfrecord_writer.py`); the config then reads them with `source: tfrecord,
tfrecord_pattern: PREFIX-*.tfrecord` (this module).

Layout for `out_prefix = /data/coco/train`:
  /data/coco/train-00000-of-00064.tfrecord ... train-00063-of-00064.tfrecord
  /data/coco/train.meta.json     categories, counts, shard list (written last: a set without
                                 it is incomplete)
One tf.train.Example per image:
  image/encoded   bytes   the image file as stored (JPEG/PNG...; decoded sources: PNG)
  image/id        int64
  image/height, image/width  int64
  objects/bbox    float[4n]  (ymin, xmin, ymax, xmax) in pixels of the original image
  objects/class   int64[n]   the dataset's own category ids

Example:
  pattern = tfrecord_writer.write_tfrecords(config.task.train_data, "/data/coco/train", 64)
  dataset, info = tfrecord_dataset(pattern, shuffle_files=True)
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

import tensorflow as tf

from nasfpn_tf.data.coco_reader import DataError, SourceInfo

FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"^(?P<prefix>.*)-\d{5}-of-\d{5}\.tfrecord$")
_READ_BUFFER_BYTES = 8 << 20
_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "objects/bbox": tf.io.VarLenFeature(tf.float32),
    "objects/class": tf.io.VarLenFeature(tf.int64),
}


def shard_path(out_prefix: str, index: int, num_shards: int) -> str:
  return f"{out_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def meta_path(out_prefix: str) -> str:
  return f"{out_prefix}.meta.json"


def _read_meta(files: list[str], pattern: str) -> dict:
  match = _SHARD_RE.match(files[0])
  if not match:
    raise DataError(f"{files[0]} (from tfrecord_pattern '{pattern}') is not named "
                    "PREFIX-NNNNN-of-NNNNN.tfrecord, so its .meta.json cannot be found")
  path = meta_path(match.group("prefix"))
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path} is missing: the TFRecords of '{pattern}' are incomplete "
                    "(their writer did not finish); write them again")
  with tf.io.gfile.GFile(path) as f:
    meta = json.load(f)
  if meta.get("format_version") != FORMAT_VERSION:
    raise DataError(f"{path}: format_version {meta.get('format_version')}, this reader "
                    f"reads {FORMAT_VERSION}")
  return meta


def _check_complete(files: list[str], meta: dict, pattern: str) -> None:
  names = {os.path.basename(f) for f in files}
  missing = [s for s in meta["shards"] if s not in names]
  if missing:
    raise DataError(f"tfrecord_pattern '{pattern}' lacks {len(missing)} of the "
                    f"{len(meta['shards'])} shards listed in its .meta.json, e.g. {missing[0]}")


def parse_example(serialized: tf.Tensor) -> dict:
  """tf.data map function: one serialised example -> a raw example (docs/design.md)."""
  parsed = tf.io.parse_single_example(serialized, _FEATURES)
  image = tf.io.decode_image(parsed["image/encoded"], channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  boxes = tf.reshape(tf.sparse.to_dense(parsed["objects/bbox"]), [-1, 4])
  classes = tf.cast(tf.sparse.to_dense(parsed["objects/class"]), tf.int32)
  return {"image": image, "image_id": parsed["image/id"], "boxes": boxes, "classes": classes}


def _read_file(path: tf.Tensor) -> tf.data.Dataset:
  return tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES)


def _info(meta: dict, pattern: str) -> SourceInfo:
  return SourceInfo(name=f"tfrecord:{pattern}", num_classes=int(meta["num_classes"]),
                    category_names={int(k): v for k, v in meta["category_names"].items()},
                    num_images=int(meta["num_images"]), num_boxes=int(meta["num_boxes"]),
                    num_crowd=int(meta.get("num_crowd", 0)),
                    skipped=dict(meta.get("skipped", {})))


def tfrecord_dataset(pattern: str, shuffle_files: bool = False,
                     input_context: Optional[tf.distribute.InputContext] = None,
                     ) -> tuple[tf.data.Dataset, SourceInfo]:
  """Reads files written by `tfrecord_writer.write_tfrecords` back as raw examples.

  Args:
    pattern: glob of the shards (what `write_tfrecords` returned).
    shuffle_files: visit the shards in a new order every epoch, several at a time (shuffle
      examples downstream as well: this only mixes whole files). Without it the examples
      come in the order they were written.
    input_context: multi-worker input; each pipeline reads its own shards (its own records
      when there are fewer shards than pipelines), before anything is decoded.

  Returns:
    (dataset of raw examples, SourceInfo from the sidecar .meta.json).

  Raises:
    DataError: no file matches, the sidecar is missing, or shards are missing.
  """
  files = sorted(tf.io.gfile.glob(pattern)) if pattern else []
  if not files:
    raise DataError(f"tfrecord_pattern '{pattern}' matches no file")
  meta = _read_meta(files, pattern)
  _check_complete(files, meta, pattern)
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  ds = tf.data.Dataset.from_tensor_slices(files)
  by_file = pipelines > 1 and len(files) >= pipelines
  if by_file:
    ds = ds.shard(pipelines, pipeline_id)
  if shuffle_files:
    ds = ds.shuffle(len(files), reshuffle_each_iteration=True)
  if shuffle_files:
    ds = ds.interleave(_read_file, cycle_length=min(len(files), 16),
                       num_parallel_calls=tf.data.AUTOTUNE)
  else:
    # One file after the other: the order written, which evaluation and tests rely on.
    ds = ds.flat_map(_read_file)
  if pipelines > 1 and not by_file:
    ds = ds.shard(pipelines, pipeline_id)
  ds = ds.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
  return ds, _info(meta, pattern)
