"""Reads any COCO-format detection dataset (annotation json + image folder) into raw examples.

Everything is validated once, at load time, so that a broken dataset fails (or is cleaned)
before training starts rather than producing silently wrong labels: the json itself, its
top-level keys, every image record (the image file's header, and its body, decoded) and every
annotation (image id, category id, bbox). With `on_bad="skip"` each problem is logged with the file and
the annotation/image id and the offending item is dropped and counted; with `on_bad="error"`
the first problem raises `DataError`.

Raw examples follow docs/design.md:
  {"image": uint8 [H, W, 3], "image_id": int64 [], "boxes": float32 [n, 4] (ymin, xmin, ymax,
   xmax) in pixels, "classes": int32 [n] (the dataset's own category ids)}
Crowd annotations are not training targets and are left out of `boxes`.

Example:
  dataset, info = coco_dataset("annotations/instances_val2017.json", "val2017")
  print(info.num_classes, info.skipped)
"""

import collections
import concurrent.futures
import dataclasses
import json
import math
import os
from typing import Any

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from nasfpn_tf.data.preprocess import IMAGE_FORMATS

_REQUIRED_KEYS = ("images", "annotations", "categories")
# COCO boxes are floats; a box spilling over the image border by up to this many pixels is
# rounding noise and is clipped, beyond it the box is wrong.
_BORDER_TOLERANCE = 1.0
# Per kind of problem, only the first few are logged one by one; the rest are counted.
_MAX_LOGGED_PER_REASON = 20
_HEADER_READ_THREADS = 8
# PIL formats that tf.io.decode_image can decode; PIL opens more (TIFF, ...) that would only
# fail later, in the middle of training.
_DECODABLE_FORMATS = tuple(IMAGE_FORMATS)
ON_BAD_CHOICES = ("skip", "error")


class DataError(ValueError):
  """A dataset file or record is malformed; the message names the file and the record."""


@dataclasses.dataclass
class SourceInfo:
  """What a data source holds, for the model config and for diagnostics.

  Attributes:
    name: where the data came from (annotation file path or TFDS name/split).
    num_classes: largest category id + 1 (ids are kept as the dataset numbers them).
    category_names: category id -> name.
    num_images: images in the dataset after validation (None: unknown without a full pass).
    num_boxes: training boxes, crowd boxes excluded (None: unknown without a full pass).
    num_crowd: crowd annotations left out of the training targets.
    skipped: problem kind -> number of annotations or images dropped for it.
  """
  name: str
  num_classes: int
  category_names: dict[int, str]
  num_images: int | None = None
  num_boxes: int | None = None
  num_crowd: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ImageRecord:
  """One validated image and its training boxes (numpy, yxyx pixels)."""
  image_id: int
  path: str
  height: int
  width: int
  boxes: np.ndarray  # float32 [n, 4]
  classes: np.ndarray  # int32 [n]


class _ProblemLog:
  """Applies the on_bad policy: raise DataError, or log (rate-limited), count and go on."""

  def __init__(self, annotation_file: str, on_bad: str):
    if on_bad not in ON_BAD_CHOICES:
      raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}")
    self.annotation_file = annotation_file
    self.on_bad = on_bad
    self.counts = collections.Counter()

  def report(self, reason: str, where: str, message: str) -> None:
    """Handles one bad record.

    Args:
      reason: short problem kind, the key in SourceInfo.skipped.
      where: the record, e.g. "annotation id=17 (index 3)".
      message: what is wrong, with the offending values.
    """
    text = f"{self.annotation_file}: {where}: {message}"
    if self.on_bad == "error":
      raise DataError(text)
    self.counts[reason] += 1
    if self.counts[reason] <= _MAX_LOGGED_PER_REASON:
      logging.warning("Skipping %s", text)
    if self.counts[reason] == _MAX_LOGGED_PER_REASON:
      logging.warning("%s: further '%s' problems are counted but not logged",
                      self.annotation_file, reason)


def _is_number(value: Any) -> bool:
  # bool is an int subclass in Python, but True is never a coordinate.
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _load_json(annotation_file: str) -> dict:
  """Parses the annotation file and checks its top-level structure.

  Args:
    annotation_file: path to a COCO json.

  Returns:
    The parsed dict.

  Raises:
    DataError: unreadable file, malformed json or missing/mistyped top-level keys.
  """
  try:
    with open(annotation_file, "rb") as f:
      coco = json.load(f)
  except OSError as e:
    raise DataError(f"{annotation_file}: cannot read annotation file: {e}") from e
  except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError
    raise DataError(f"{annotation_file}: malformed JSON: {e}") from e
  if not isinstance(coco, dict):
    raise DataError(f"{annotation_file}: top level must be a JSON object, got "
                    f"{type(coco).__name__}")
  for key in _REQUIRED_KEYS:
    if key not in coco:
      raise DataError(f"{annotation_file}: missing top-level key '{key}' (need {_REQUIRED_KEYS})")
    if not isinstance(coco[key], list):
      raise DataError(f"{annotation_file}: top-level key '{key}' must be a list, got "
                      f"{type(coco[key]).__name__}")
  return coco


def _parse_categories(annotation_file: str, categories: list) -> dict[int, str]:
  """Category id -> name. A bad category invalidates every label, so it always raises.

  Args:
    annotation_file: path, for messages.
    categories: the json's "categories" list.

  Returns:
    Dict of category id to name, ids as the dataset numbers them (may be sparse).

  Raises:
    DataError: missing/negative/duplicate id, missing name, or no categories at all.
  """
  names = {}
  for i, category in enumerate(categories):
    where = f"{annotation_file}: categories[{i}]"
    if not isinstance(category, dict) or not _is_int(category.get("id")):
      raise DataError(f"{where}: needs an integer 'id', got {category!r}")
    category_id = category["id"]
    if category_id < 0:
      raise DataError(f"{where}: category id {category_id} is negative")
    if category_id in names:
      raise DataError(f"{where}: duplicate category id {category_id}")
    if not isinstance(category.get("name"), str):
      raise DataError(f"{where}: category id {category_id} needs a string 'name'")
    names[category_id] = category["name"]
  if not names:
    raise DataError(f"{annotation_file}: 'categories' is empty")
  return names


def _image_header_problem(path: str, height: int, width: int) -> tuple[str, str] | None:
  """Reads the image header, compares it with the json, then decodes the body.

  The decode is what makes a truncated or corrupt file fail here, by name, instead of in the
  middle of training. JPEGs are decoded at 1/8 scale (libjpeg's DCT scaling), which still
  reads every byte of the compressed data, at a fraction of a full decode's cost.

  Args:
    path: image file.
    height: height from the json.
    width: width from the json.

  Returns:
    None when fine, else (reason, message).
  """
  if not os.path.isfile(path):
    return "image_missing", f"image file {path} does not exist"
  try:
    with Image.open(path) as image:  # lazy: parses the header, not the pixels
      file_width, file_height = image.size
      file_format = image.format
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many error types
    return "image_unreadable", f"image file {path} is not a readable image: {e}"
  if file_format not in _DECODABLE_FORMATS:
    return ("image_unreadable", f"image file {path} is {file_format}, which tf.io.decode_image "
            f"cannot decode (it reads {', '.join(_DECODABLE_FORMATS)})")
  if (file_height, file_width) != (height, width):
    return ("image_size_mismatch", f"image file {path} is {file_height}x{file_width} (h x w) "
            f"but the json says {height}x{width}")
  try:
    with Image.open(path) as image:
      image.draft("RGB", (max(width // 8, 1), max(height // 8, 1)))  # JPEG only; others: no-op
      image.load()
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many error types
    return "image_unreadable", f"image file {path} cannot be decoded (truncated or corrupt): {e}"
  return None


def _parse_images(annotation_file: str, image_dir: str, images: list,
                  problems: _ProblemLog) -> dict[int, dict]:
  """Validates image records and their files.

  Args:
    annotation_file: path, for messages.
    image_dir: folder holding the images.
    images: the json's "images" list.
    problems: the on_bad policy.

  Returns:
    image id -> {"path", "height", "width", "position"} for the usable images, in json order.
  """
  if image_dir and not os.path.isdir(image_dir):
    raise DataError(f"{annotation_file}: image_dir {image_dir} is not a folder")
  records, seen = {}, collections.Counter()
  for image in images:
    if isinstance(image, dict) and _is_int(image.get("id")):
      seen[image["id"]] += 1
  for i, image in enumerate(images):
    image_id = image.get("id") if isinstance(image, dict) else None
    where = f"image id={image_id} (images[{i}])"
    if not isinstance(image, dict) or not _is_int(image_id):
      problems.report("bad_image_record", where, f"needs an integer 'id', got {image!r}")
      continue
    if seen[image_id] > 1:
      # Annotations cannot tell which of the duplicates they belong to: drop them all.
      problems.report("duplicate_image_id", where, f"image id {image_id} appears "
                      f"{seen[image_id]} times")
      continue
    file_name, height, width = image.get("file_name"), image.get("height"), image.get("width")
    if not isinstance(file_name, str) or not (_is_int(height) and _is_int(width)
                                              and height > 0 and width > 0):
      problems.report("bad_image_record", where, "needs a string 'file_name' and positive "
                      f"integer 'height'/'width', got {file_name!r}, {height!r}, {width!r}")
      continue
    records[image_id] = {"path": os.path.join(image_dir, file_name), "height": height,
                         "width": width, "position": i}
  _check_image_files(records, problems)
  return records


def _check_image_files(records: dict[int, dict], problems: _ProblemLog) -> None:
  """Drops (or raises for) images whose file is missing, unreadable or of the wrong size.

  Args:
    records: image id -> record; bad images are removed in place.
    problems: the on_bad policy.
  """
  # Header reads are I/O bound: threads help on network file systems even with 2 cores.
  with concurrent.futures.ThreadPoolExecutor(_HEADER_READ_THREADS) as pool:
    results = list(pool.map(lambda r: _image_header_problem(r["path"], r["height"], r["width"]),
                            records.values()))
  for image_id, result in zip(list(records), results):
    if result is not None:
      reason, message = result
      where = f"image id={image_id} (images[{records[image_id]['position']}])"
      problems.report(reason, where, message)
      del records[image_id]


def _bbox_problem(bbox: Any, height: int, width: int
                  ) -> tuple[str, str, list[float] | None]:
  """Checks one COCO [x, y, w, h] box against its image and converts it.

  Args:
    bbox: the annotation's "bbox" value.
    height: image height.
    width: image width.

  Returns:
    (reason, message, None) when bad, else ("", "", [ymin, xmin, ymax, xmax]) clipped to the image.
  """
  if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
    return "bad_bbox", f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}", None
  x, y, w, h = (float(v) for v in bbox)
  if w <= 0 or h <= 0:
    return "empty_bbox", f"bbox {bbox} has zero or negative size", None
  tol = _BORDER_TOLERANCE
  if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
    return ("bbox_outside_image", f"bbox {bbox} extends beyond the {width}x{height} (w x h) "
            f"image by more than {tol:g} px", None)
  ymin, xmin = max(y, 0.0), max(x, 0.0)
  ymax, xmax = min(y + h, float(height)), min(x + w, float(width))
  if ymax <= ymin or xmax <= xmin:
    return "empty_bbox", f"bbox {bbox} is empty once clipped to the image", None
  return "", "", [ymin, xmin, ymax, xmax]


def _describe_ids(category_names: dict[int, str]) -> str:
  ids = sorted(category_names)
  if len(ids) <= 12:
    return f"ids {ids}"
  return f"{len(ids)} ids in {ids[0]}..{ids[-1]}"


def _parse_annotations(annotations: list, records: dict[int, dict], all_image_ids: set,
                       category_names: dict[int, str], problems: _ProblemLog
                       ) -> tuple[dict[int, list], int]:
  """Validates annotations and groups the training boxes by image.

  Args:
    annotations: the json's "annotations" list.
    records: usable images (id -> record).
    all_image_ids: every image id in the json, usable or not: an annotation of a skipped
      image goes with its image instead of being reported as unknown.
    category_names: valid category ids.
    problems: the on_bad policy.

  Returns:
    (image id -> list of (yxyx box, category id), number of crowd annotations left out).
  """
  boxes = collections.defaultdict(list)
  num_crowd = 0
  for i, ann in enumerate(annotations):
    ann_id = ann.get("id") if isinstance(ann, dict) else None
    where = f"annotation id={ann_id} (annotations[{i}])"
    if not isinstance(ann, dict) or not _is_int(ann.get("image_id")):
      problems.report("bad_annotation", where, f"needs an integer 'image_id', got {ann!r}")
      continue
    image_id = ann["image_id"]
    where += f" of image id={image_id}"
    if image_id not in all_image_ids:
      problems.report("unknown_image_id", where, f"image_id {image_id} is not in 'images'")
      continue
    if image_id not in records:
      problems.counts["annotation_of_skipped_image"] += 1
      continue
    category_id = ann.get("category_id")
    if not _is_int(category_id) or category_id not in category_names:
      problems.report("unknown_category_id", where, f"category_id {category_id!r} is not in "
                      f"'categories' ({_describe_ids(category_names)})")
      continue
    is_crowd = ann.get("iscrowd", 0)
    if is_crowd not in (0, 1):  # True/False compare equal to 1/0
      problems.report("bad_annotation", where, f"iscrowd must be 0 or 1, got {is_crowd!r}")
      continue
    if is_crowd:
      num_crowd += 1  # crowd regions are not training targets
      continue
    record = records[image_id]
    reason, message, box = _bbox_problem(ann.get("bbox"), record["height"], record["width"])
    if box is None:
      problems.report(reason, where, message)
      continue
    boxes[image_id].append((box, category_id))
  return boxes, num_crowd


def load_coco_index(annotation_file: str, image_dir: str, on_bad: str = "skip"
                    ) -> tuple[list[ImageRecord], SourceInfo]:
  """Validates a COCO dataset and returns its images with their training boxes.

  Args:
    annotation_file: COCO json path.
    image_dir: folder the json's file_name entries are relative to.
    on_bad: "skip" logs, counts and drops bad annotations (bad images with all their
      annotations); "error" raises DataError on the first problem.

  Returns:
    (image records in json order, SourceInfo). Images without boxes are kept: they are valid
    negatives.

  Raises:
    DataError: on any problem with on_bad="error"; always for a malformed json, missing
      top-level keys, bad categories, or when no usable image is left.
  """
  problems = _ProblemLog(annotation_file, on_bad)
  coco = _load_json(annotation_file)
  category_names = _parse_categories(annotation_file, coco["categories"])
  if not coco["images"]:
    raise DataError(f"{annotation_file}: 'images' is empty")
  records = _parse_images(annotation_file, image_dir, coco["images"], problems)
  all_image_ids = {im["id"] for im in coco["images"]
                   if isinstance(im, dict) and _is_int(im.get("id"))}
  boxes, num_crowd = _parse_annotations(coco["annotations"], records, all_image_ids,
                                        category_names, problems)
  if not records:
    raise DataError(f"{annotation_file}: no usable images (problems: {dict(problems.counts)})")
  index = []
  for image_id, record in records.items():
    pairs = boxes.get(image_id, [])
    index.append(ImageRecord(
        image_id=image_id, path=record["path"], height=record["height"], width=record["width"],
        boxes=np.array([b for b, _ in pairs], np.float32).reshape(-1, 4),
        classes=np.array([c for _, c in pairs], np.int32)))
  info = SourceInfo(name=annotation_file, num_classes=max(category_names) + 1,
                    category_names=category_names, num_images=len(index),
                    num_boxes=sum(len(r.classes) for r in index), num_crowd=num_crowd,
                    skipped=dict(problems.counts))
  if problems.counts:
    logging.warning("%s: kept %d images and %d boxes; skipped %s", annotation_file,
                    info.num_images, info.num_boxes, info.skipped)
  return index, info


def decode_raw_example(element: dict) -> dict:
  """tf.data map function: reads and decodes the image of one indexed element.

  Args:
    element: {"path": string, "image_id", "boxes", "classes"}.

  Returns:
    A raw example (see the module docstring).
  """
  image = tf.io.decode_image(tf.io.read_file(element["path"]), channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return {"image": image, "image_id": element["image_id"],
          "boxes": tf.ensure_shape(element["boxes"], [None, 4]),
          "classes": tf.ensure_shape(element["classes"], [None])}


def dataset_from_index(index: list[ImageRecord], shuffle: bool = False,
                       seed: int | None = None) -> tf.data.Dataset:
  """Builds the raw-example dataset from validated records.

  The element before decoding is only a path and a few boxes, so shuffling happens there:
  a shuffle buffer after decoding would hold whole images.

  Args:
    index: records from load_coco_index.
    shuffle: shuffle the whole index, differently every epoch.
    seed: shuffle seed (None: nondeterministic).

  Returns:
    tf.data.Dataset of raw examples, one per record.
  """
  lengths = [len(r.classes) for r in index]
  boxes = np.concatenate([r.boxes for r in index]).reshape(-1, 4)
  classes = np.concatenate([r.classes for r in index]).astype(np.int32)
  dataset = tf.data.Dataset.from_tensor_slices({
      "path": tf.constant([r.path for r in index]),
      "image_id": tf.constant([r.image_id for r in index], tf.int64),
      # Ragged slices arrive in the map function as dense [n, 4] / [n] tensors.
      "boxes": tf.RaggedTensor.from_row_lengths(boxes, tf.constant(lengths, tf.int64)),
      "classes": tf.RaggedTensor.from_row_lengths(classes, tf.constant(lengths, tf.int64)),
  })
  if shuffle:
    dataset = dataset.shuffle(len(index), seed=seed, reshuffle_each_iteration=True)
  return dataset.map(decode_raw_example, num_parallel_calls=tf.data.AUTOTUNE)


def coco_dataset(annotation_file: str, image_dir: str, on_bad: str = "skip", *,
                 shuffle: bool = False, seed: int | None = None
                 ) -> tuple[tf.data.Dataset, SourceInfo]:
  """A validated COCO-format dataset as raw examples.

  Args:
    annotation_file: COCO json path.
    image_dir: folder the json's file_name entries are relative to.
    on_bad: "skip" (log, count, drop) or "error" (raise DataError) for bad records.
    shuffle: shuffle image order before decoding, differently every epoch.
    seed: shuffle seed.

  Returns:
    (dataset of raw examples, SourceInfo with num_classes = largest category id + 1).
  """
  index, info = load_coco_index(annotation_file, image_dir, on_bad)
  return dataset_from_index(index, shuffle=shuffle, seed=seed), info
