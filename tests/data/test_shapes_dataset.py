"""Tests for the embedded shapes dataset: determinism, split separation, statistics, caching."""

import collections
import hashlib
import json
import os

import numpy as np
from PIL import Image
import pytest

from nasfpn_tf.data import coco_reader
from nasfpn_tf.data import shapes_dataset

_NUM_IMAGES = 40


def _file_digests(image_dir):
  return {name: hashlib.sha256(open(os.path.join(image_dir, name), "rb").read()).hexdigest()
          for name in sorted(os.listdir(image_dir))}


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
  root = tmp_path_factory.mktemp("shapes")
  annotation_file, image_dir = shapes_dataset.generate_shapes_dataset(
      str(root), "train", _NUM_IMAGES, seed=3)
  with open(annotation_file) as f:
    return annotation_file, image_dir, json.load(f)


def test_same_seed_gives_identical_files(tmp_path):
  first = shapes_dataset.generate_shapes_dataset(str(tmp_path / "a"), "train", 4, seed=7)
  second = shapes_dataset.generate_shapes_dataset(str(tmp_path / "b"), "train", 4, seed=7)
  assert open(first[0], "rb").read() == open(second[0], "rb").read()
  assert _file_digests(first[1]) == _file_digests(second[1])
  assert len(_file_digests(first[1])) == 4  # no temp files left behind


def test_splits_and_seeds_give_different_images(tmp_path):
  root = str(tmp_path)
  train = _file_digests(shapes_dataset.generate_shapes_dataset(root, "train", 6, seed=7)[1])
  val = _file_digests(shapes_dataset.generate_shapes_dataset(root, "val", 6, seed=7)[1])
  other_seed = _file_digests(
      shapes_dataset.generate_shapes_dataset(str(tmp_path / "s8"), "train", 6, seed=8)[1])
  holdout = _file_digests(shapes_dataset.generate_shapes_dataset(root, "holdout", 6, seed=7)[1])
  assert not set(train.values()) & set(val.values())
  assert not (set(train.values()) | set(val.values())) & set(holdout.values())
  assert not set(train.values()) & set(other_seed.values())


def test_image_k_does_not_depend_on_num_images(tmp_path):
  # Sets of 2 and 3 images (other folders, same seed/split/size) share their first two.
  small_json, small_dir = shapes_dataset.generate_shapes_dataset(str(tmp_path / "a"), "train", 2,
                                                                 image_size=64, seed=5)
  large_json, large_dir = shapes_dataset.generate_shapes_dataset(str(tmp_path / "b"), "train", 3,
                                                                 image_size=64, seed=5)
  small, large = (json.load(open(p)) for p in (small_json, large_json))
  assert [i["id"] for i in small["images"]] == [1, 2] and len(large["images"]) == 3
  for name in ("000001.jpg", "000002.jpg"):
    with open(os.path.join(small_dir, name), "rb") as a, open(os.path.join(large_dir, name),
                                                                "rb") as b:
      assert a.read() == b.read(), name
  assert small["annotations"] == [a for a in large["annotations"] if a["image_id"] <= 2]
  assert any(a["image_id"] == 3 for a in large["annotations"])


def test_coco_structure(train_set):
  annotation_file, image_dir, coco = train_set
  assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]
  assert tuple(c["name"] for c in coco["categories"]) == shapes_dataset.CLASS_NAMES
  assert len(coco["images"]) == _NUM_IMAGES
  image = coco["images"][0]
  assert (image["height"], image["width"]) == (256, 256)
  with Image.open(os.path.join(image_dir, image["file_name"])) as f:
    assert f.size == (256, 256) and f.mode == "RGB"
  ids = [a["id"] for a in coco["annotations"]]
  assert len(set(ids)) == len(ids)
  for ann in coco["annotations"]:
    x, y, w, h = ann["bbox"]
    assert ann["iscrowd"] == 0 and ann["area"] == w * h
    assert 0 <= x and 0 <= y and x + w <= 256 and y + h <= 256 and w > 0 and h > 0


def test_statistics(train_set):
  _, _, coco = train_set
  annotations = coco["annotations"]
  per_image = collections.Counter(a["image_id"] for a in annotations)
  counts = [per_image[im["id"]] for im in coco["images"]]
  assert min(counts) >= 1 and max(counts) <= 8 and len(set(counts)) >= 4
  classes = collections.Counter(a["category_id"] for a in annotations)
  assert len(classes) == 5 and min(classes.values()) >= 0.1 * len(annotations)
  areas = np.array([a["area"] for a in annotations])
  # COCO's area ranges: small < 32^2 <= medium < 96^2 <= large.
  assert (areas < 32**2).mean() > 0.15
  assert ((areas >= 32**2) & (areas < 96**2)).mean() > 0.15
  assert (areas >= 96**2).mean() > 0.03
  sides = np.sort(np.array([a["bbox"][2:] for a in annotations]), axis=1)
  assert sides[:, 0].min() >= 5 and sides[:, 1].min() >= 10 and sides.max() <= 140


def test_objects_stand_out_from_background(train_set):
  # Objects must differ from what surrounds them, or the task is not learnable.
  _, image_dir, coco = train_set
  image_record = coco["images"][0]
  pixels = np.asarray(Image.open(os.path.join(image_dir, image_record["file_name"])), np.float32)
  for ann in (a for a in coco["annotations"] if a["image_id"] == image_record["id"]):
    x, y, w, h = (int(v) for v in ann["bbox"])
    # The box grown by 2 px holds object and background pixels.
    around = pixels[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2].reshape(-1, 3)
    assert np.ptp(around, axis=0).max() > 60


def test_reader_accepts_generated_set(train_set):
  annotation_file, image_dir, coco = train_set
  dataset, info = coco_reader.coco_dataset(annotation_file, image_dir, on_bad="error")
  assert info.num_classes == 6 and info.skipped == {}
  assert info.num_boxes == len(coco["annotations"])
  example = next(iter(dataset))
  assert example["image"].shape == (256, 256, 3)


def test_ensure_generates_only_when_missing_or_different(tmp_path):
  root = str(tmp_path)
  annotation_file, image_dir = shapes_dataset.ensure_shapes_dataset(root, "val", 3, seed=1)
  stamp = os.stat(annotation_file).st_mtime_ns
  assert shapes_dataset.ensure_shapes_dataset(root, "val", 3, seed=1) == (annotation_file,
                                                                          image_dir)
  assert os.stat(annotation_file).st_mtime_ns == stamp  # reused, not rewritten
  five_file, five_dir = shapes_dataset.ensure_shapes_dataset(root, "val", 5, seed=1)
  assert five_dir == image_dir and five_file != annotation_file  # shared images, own json
  with open(five_file) as f:
    assert len(json.load(f)["images"]) == 5
  with open(annotation_file) as f:
    assert len(json.load(f)["images"]) == 3  # the 3-image set's json is left as it was
  assert os.stat(annotation_file).st_mtime_ns == stamp
  os.remove(os.path.join(image_dir, "000002.jpg"))
  shapes_dataset.ensure_shapes_dataset(root, "val", 5, seed=1)
  assert os.path.exists(os.path.join(image_dir, "000002.jpg"))  # incomplete: regenerated
  other = shapes_dataset.ensure_shapes_dataset(root, "val", 5, seed=2)
  assert other[1] != image_dir  # another seed never overwrites these images
  assert not [n for n in os.listdir(os.path.dirname(annotation_file)) if n.startswith(".tmp")]
