"""COCO through TensorFlow Datasets (`coco/2017` by default), as raw examples.

TFDS stores COCO with normalised (ymin, xmin, ymax, xmax) boxes and contiguous labels 0..79.
Raw examples (docs/design.md) use pixel boxes and the dataset's own category ids, so labels are
mapped back to COCO's original ids 1..90 and `num_classes` is 91 whether COCO comes from the
json reader or from here. Crowd objects are not training targets and are dropped.

Nothing is downloaded unless `download=True` is passed: without it a missing dataset fails
at once with a DataError naming the folder searched and the flag to set.

Example:
  dataset, info = tfds_dataset("coco/2017", split="validation", data_dir="/data/tfds")
"""

from collections.abc import Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from nasfpn_tf.data.coco_reader import DataError
from nasfpn_tf.data.coco_reader import SourceInfo

# COCO's 80 used category ids (1..90 with gaps) and names, in TFDS label order (label k is
# the k-th category of the annotation file, which lists them by id).
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)
# TFDS label (0..79) -> COCO category id.
COCO_LABEL_TO_CATEGORY_ID = tuple(category_id for category_id, _ in COCO_CATEGORIES)
_REQUIRED_FEATURES = ("image", "image/id", "objects")
_REQUIRED_OBJECT_FEATURES = ("bbox", "label", "is_crowd")


def coco_label_map(label_names: Sequence[str]) -> tuple[int, ...]:
  """Maps TFDS COCO labels 0..79 to COCO category ids.

  By name when the labels carry COCO's names (robust to any label order), else by position
  (TFDS lists the categories in id order).

  Args:
    label_names: the ClassLabel names, 80 of them.

  Returns:
    Tuple whose k-th entry is the category id of label k.

  Raises:
    DataError: when there are not 80 labels.
  """
  if len(label_names) != len(COCO_CATEGORIES):
    raise DataError(f"expected the {len(COCO_CATEGORIES)} COCO labels, got {len(label_names)}; "
                    "pass label_map for a non-COCO dataset")
  name_to_id = {name: category_id for category_id, name in COCO_CATEGORIES}
  if all(name in name_to_id for name in label_names):
    return tuple(name_to_id[name] for name in label_names)
  return COCO_LABEL_TO_CATEGORY_ID


def _prepared_builder(name: str, data_dir: str | None, download: bool
                      ) -> tfds.core.DatasetBuilder:
  """The TFDS builder, refusing to go on (or to download) when its data is not there.

  Args:
    name: TFDS name, e.g. "coco/2017".
    data_dir: TFDS data folder (None: TFDS's default, ~/tensorflow_datasets).
    download: whether the user allowed downloading.

  Returns:
    The builder.

  Raises:
    DataError: unknown dataset name, or data absent and download=False.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(f"TFDS dataset {name!r} is unknown (data_dir={data_dir}): "
                    f"{str(e).splitlines()[0]}") from e
  if not download and not builder.is_prepared():
    raise DataError(
        f"TFDS dataset {name!r} is not prepared under data_dir={data_dir or '(TFDS default)'} "
        f"(looked for {builder.data_dir}). Point data_dir (config: tfds_data_dir) at the folder "
        "that holds it, or pass download=True (config: tfds_download: true) to let TFDS "
        "download and prepare it (COCO 2017 is about 25 GB).")
  return builder


def _check_features(name: str, features: tfds.features.FeaturesDict) -> None:
  for key in _REQUIRED_FEATURES:
    if key not in features.keys():
      raise DataError(f"TFDS dataset {name!r} has no feature '{key}' (has {list(features.keys())})")
  for key in _REQUIRED_OBJECT_FEATURES:
    if key not in features["objects"].feature.keys():
      raise DataError(f"TFDS dataset {name!r} has no feature 'objects/{key}'")


def to_raw_example(example: dict, label_to_category: tf.Tensor) -> dict:
  """Maps one TFDS COCO example to a raw example (pixel yxyx boxes, COCO ids, no crowd).

  Args:
    example: TFDS example with image, image/id and objects/{bbox, label, is_crowd}.
    label_to_category: int32 [num_labels] category id of each TFDS label.

  Returns:
    Raw example as in docs/design.md.
  """
  image = example["image"]
  objects = example["objects"]
  height_width = tf.cast(tf.shape(image)[:2], tf.float32)
  boxes = objects["bbox"] * tf.tile(height_width, [2])
  size = boxes[:, 2:] - boxes[:, :2]
  # Crowd regions are not targets; zero-size boxes are dropped as the COCO json reader does.
  keep = tf.logical_and(tf.logical_not(objects["is_crowd"]), tf.reduce_all(size > 0, axis=1))
  classes = tf.gather(label_to_category, tf.boolean_mask(objects["label"], keep))
  return {"image": tf.ensure_shape(image, [None, None, 3]),
          "image_id": tf.cast(example["image/id"], tf.int64),
          "boxes": tf.boolean_mask(boxes, keep),
          "classes": tf.cast(classes, tf.int32)}


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int | None:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # e.g. a split the metadata does not list
    return None


def tfds_dataset(name: str = "coco/2017", split: str = "train", data_dir: str | None = None,
                 download: bool = False, *, shuffle_files: bool = False,
                 label_map: Sequence[int] | None = None) -> tuple[tf.data.Dataset, SourceInfo]:
  """A TFDS detection dataset with COCO's features, as raw examples.

  Args:
    name: TFDS name; any builder whose features look like coco/2017's works.
    split: TFDS split, slicing allowed ("train[:1%]").
    data_dir: TFDS data folder (None: TFDS's default).
    download: allow TFDS to download and prepare missing data. Off by default: COCO is large.
    shuffle_files: shuffle the TFDS shards (cheap; shuffle examples downstream if needed).
    label_map: category id of each TFDS label; default: COCO's 80 -> 1..90 table.

  Returns:
    (dataset of raw examples, SourceInfo). num_classes is max category id + 1 (91 for COCO).

  Raises:
    DataError: unknown name, data absent without download, or features unlike COCO's.
  """
  builder = _prepared_builder(name, data_dir, download)
  features = builder.info.features
  _check_features(name, features)
  label_names = features["objects"]["label"].names
  label_to_category = tuple(label_map) if label_map is not None else coco_label_map(label_names)
  if len(label_to_category) != len(label_names):
    raise DataError(f"label_map has {len(label_to_category)} entries but TFDS dataset {name!r} "
                    f"has {len(label_names)} labels")
  try:
    dataset = tfds.load(name, split=split, data_dir=data_dir, download=download,
                        shuffle_files=shuffle_files)
  except AssertionError as e:  # TFDS's "could not find data" (e.g. removed meanwhile)
    raise DataError(f"TFDS dataset {name!r} under data_dir={data_dir}: {e}") from e
  except ValueError as e:  # e.g. an unknown split name
    raise DataError(f"TFDS dataset {name!r}, split {split!r}: {e}") from e
  table = tf.constant(np.asarray(label_to_category, np.int32))
  dataset = dataset.map(lambda example: to_raw_example(example, table),
                        num_parallel_calls=tf.data.AUTOTUNE)
  names = {category_id: label_names[k] for k, category_id in enumerate(label_to_category)}
  if label_map is None and set(label_names) != {n for _, n in COCO_CATEGORIES}:
    # Unnamed labels: fall back on COCO's names for the mapped ids.
    names = dict(COCO_CATEGORIES)
    logging.info("TFDS dataset %s has no COCO label names; mapped labels by position", name)
  info = SourceInfo(name=f"tfds:{name}[{split}]", num_classes=max(label_to_category) + 1,
                    category_names=names, num_images=_num_examples(builder, split),
                    num_boxes=None)
  return dataset, info
