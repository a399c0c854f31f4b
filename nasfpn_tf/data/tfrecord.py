"""Raw examples as sharded TFRecord files, so large datasets stream from disk.

A COCO json source keeps the whole annotation file and the image index in memory and reads one
image file per example; TFRecords pack images and their boxes into a few large files that any
number of workers read in parallel, each its own shards (`input_context`), from local disk or
a bucket (`gs://`). `run.py --mode=make_tfrecords` writes them from any source; the config then
reads them with `source: tfrecord, tfrecord_pattern: PREFIX-*.tfrecord`.

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

Each shard is written under a temporary name and renamed when complete (`file_io`), so a
killed writer never leaves a truncated shard under a final name; the next writer removes its
temporary files.

Example:
  pattern = write_tfrecords(config.task.train_data, "/data/coco/train", num_shards=64)
  dataset, info = tfrecord_dataset(pattern, shuffle_files=True)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import re
from typing import Iterable, Iterator, Optional

import numpy as np
import tensorflow as tf

from nasfpn_tf import file_io
from nasfpn_tf.configs.experiment import DataConfig
from nasfpn_tf.data.coco_reader import DataError, ImageRecord, SourceInfo, load_coco_index

FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"^(?P<prefix>.*)-\d{5}-of-\d{5}\.tfrecord$")
# Images per shard when `num_shards` is not given: ~100-200 MB shards for COCO-sized JPEGs,
# large enough for fast sequential reads, small enough to balance many workers.
_IMAGES_PER_SHARD = 1024
_WRITER_THREADS = 8
_READ_BUFFER_BYTES = 8 << 20
_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "objects/bbox": tf.io.VarLenFeature(tf.float32),
    "objects/class": tf.io.VarLenFeature(tf.int64),
}


@dataclasses.dataclass
class _Record:
  """One image ready to serialise."""
  encoded: bytes
  image_id: int
  height: int
  width: int
  boxes: np.ndarray  # float32 [n, 4]
  classes: np.ndarray  # int [n]


def shard_path(out_prefix: str, index: int, num_shards: int) -> str:
  return f"{out_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def meta_path(out_prefix: str) -> str:
  return f"{out_prefix}.meta.json"


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
  # Imported here: input_pipeline imports this module (lazily) for reading.
  from nasfpn_tf.data import input_pipeline
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
  """Reads files written by `write_tfrecords` back as raw examples.

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
