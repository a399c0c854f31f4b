"""Writes any data source as the sharded TFRecords that `tfrecord.py` reads.

`run.py --mode=make_tfrecords` calls `write_tfrecords`; the layout of the files is in
tfrecord.py's docstring. Each shard is written under a temporary name and renamed when complete
(`file_io`), so a killed writer never leaves a truncated shard under a final name; the next
writer removes its temporary files.

Example:
  pattern = write_tfrecords(config.task.train_data, "/data/coco/train", num_shards=64)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from typing import Iterable, Iterator, Optional

import numpy as np
import tensorflow as tf

from nasfpn_tf import file_io
from nasfpn_tf.configs.experiment import DataConfig
from nasfpn_tf.data import input_pipeline
from nasfpn_tf.data.coco_reader import DataError, ImageRecord, load_coco_index
from nasfpn_tf.data.tfrecord import FORMAT_VERSION, meta_path, shard_path

# Images per shard when `num_shards` is not given: ~100-200 MB shards for COCO-sized JPEGs,
# large enough for fast sequential reads, small enough to balance many workers.
_IMAGES_PER_SHARD = 1024
_WRITER_THREADS = 8


@dataclasses.dataclass
class _Record:
  """One image ready to serialise."""
  encoded: bytes
  image_id: int
  height: int
  width: int
  boxes: np.ndarray  # float32 [n, 4]
  classes: np.ndarray  # int [n]


def _int64(values: Iterable[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def serialize(record: _Record) -> bytes:
  """One image as a serialised tf.train.Example (the layout in the module docstring)."""
  feature = {
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.encoded])),
      "image/id": _int64([record.image_id]),
      "image/height": _int64([record.height]),
      "image/width": _int64([record.width]),
      "objects/bbox": tf.train.Feature(float_list=tf.train.FloatList(
          value=np.asarray(record.boxes, np.float32).reshape(-1).tolist())),
      "objects/class": _int64(np.asarray(record.classes).reshape(-1).tolist()),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _from_file(record: ImageRecord) -> _Record:
  # The stored file bytes, not decoded pixels: no re-encoding loss and ~10x less disk.
  with tf.io.gfile.GFile(record.path, "rb") as f:
    encoded = f.read()
  return _Record(encoded, record.image_id, record.height, record.width, record.boxes,
                 record.classes)


def _encode_raw(example: dict) -> dict:
  # Sources that only hand out decoded pixels (TFDS, TFRecords): PNG keeps them exact.
  shape = tf.shape(example["image"])
  return {"encoded": tf.io.encode_png(example["image"]), "image_id": example["image_id"],
          "height": shape[0], "width": shape[1], "boxes": example["boxes"],
          "classes": example["classes"]}


def _from_encoded(element: dict) -> _Record:
  return _Record(element["encoded"], int(element["image_id"]), int(element["height"]),
                 int(element["width"]), element["boxes"], element["classes"])


def _write_shard(path: str, records: Iterator[_Record]) -> tuple[int, int]:
  """Writes records to `path` through a temporary file; returns (images, boxes) written."""
  counts = [0, 0]

  def write(tmp: str) -> None:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in records:
        writer.write(serialize(record))
        counts[0], counts[1] = counts[0] + 1, counts[1] + len(record.classes)

  file_io.atomic_save(write, path, keep_extension=False)
  return counts[0], counts[1]


def _write_from_index(index: list[ImageRecord], paths: list[str]) -> list[tuple[int, int]]:
  """Image files -> shards of consecutive images, several shards at a time."""
  chunks = np.array_split(np.arange(len(index)), len(paths))

  def write(i: int) -> tuple[int, int]:
    return _write_shard(paths[i], (_from_file(index[k]) for k in chunks[i]))

  # Reading and writing files releases the GIL: threads keep the storage busy.
  with concurrent.futures.ThreadPoolExecutor(min(_WRITER_THREADS, len(paths))) as pool:
    return list(pool.map(write, range(len(paths))))


def _write_from_dataset(raw: tf.data.Dataset, paths: list[str]) -> list[tuple[int, int]]:
  """Decoded raw examples -> shards, round robin, in one streaming pass (never all in memory)."""
  encoded = raw.map(_encode_raw, num_parallel_calls=tf.data.AUTOTUNE).prefetch(8)
  temps = [file_io.temp_path(p, keep_extension=False) for p in paths]
  writers = [tf.io.TFRecordWriter(t) for t in temps]
  counts = [[0, 0] for _ in paths]
  for j, element in enumerate(encoded.as_numpy_iterator()):
    record = _from_encoded(element)
    writers[j % len(paths)].write(serialize(record))
    counts[j % len(paths)][0] += 1
    counts[j % len(paths)][1] += len(record.classes)
  for writer, tmp, path in zip(writers, temps, paths):
    writer.close()
    file_io.commit(tmp, path)
  return [tuple(c) for c in counts]


def _default_num_shards(num_images: Optional[int]) -> int:
  if not num_images:
    return 16
  return max(1, min(1024, math.ceil(num_images / _IMAGES_PER_SHARD)))


def write_tfrecords(data: DataConfig, out_prefix: str, num_shards: Optional[int] = None) -> str:
  """Writes the images and boxes of a data source as sharded TFRecords.

  Args:
    data: any data config (embedded, coco, tfds, tfrecord); augmentation settings are
      ignored and every usable image is written once. JSON sources (embedded, coco) fill
      each shard with consecutive images from their stored files; the others are read in
      one streaming pass, PNG-encoded and dealt to the shards in turn.
    out_prefix: path prefix of the files (folders are created).
    num_shards: number of files; default: one per 1024 images.

  Returns:
    The glob pattern to put in `tfrecord_pattern`.
  """
  data = dataclasses.replace(data, is_training=False)  # every image once, in order
  if data.source in ("embedded", "coco"):
    annotation_file, image_dir = input_pipeline.coco_paths(data)
    index, info = load_coco_index(annotation_file, image_dir, on_bad=data.on_bad_annotation)
    num_images = len(index)
  else:
    raw, info = input_pipeline.raw_dataset(data)
    num_images = info.num_images
  num_shards = num_shards or _default_num_shards(num_images)
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  if os.path.dirname(out_prefix):
    file_io.makedirs(os.path.dirname(out_prefix))
    file_io.clean_stale_temp_files(os.path.dirname(out_prefix))  # shards of a killed writer
  paths = [shard_path(out_prefix, i, num_shards) for i in range(num_shards)]
  if data.source in ("embedded", "coco"):
    counts = _write_from_index(index, paths)
  else:
    counts = _write_from_dataset(raw, paths)
  if sum(c[0] for c in counts) == 0:
    raise DataError(f"{info.name}: no images to write")
  # The sidecar goes last: its presence marks a complete set of shards.
  file_io.write_json(meta_path(out_prefix), {
      "format_version": FORMAT_VERSION, "source": info.name,
      "num_classes": info.num_classes,
      "category_names": {str(k): v for k, v in info.category_names.items()},
      "num_images": sum(c[0] for c in counts), "num_boxes": sum(c[1] for c in counts),
      "num_crowd": info.num_crowd, "skipped": info.skipped,
      "shards": [os.path.basename(p) for p in paths], "shard_sizes": [c[0] for c in counts],
  }, indent=1)
  return f"{out_prefix}-*-of-{num_shards:05d}.tfrecord"


