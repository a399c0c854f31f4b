"""Tests for the COCO-format reader: raw-example format, every validation path, both policies."""

import copy
import json
import logging
import os

import numpy as np
from PIL import Image
import pytest

from nasfpn_tf.data import coco_reader
from nasfpn_tf.data.coco_reader import DataError

# Sparse ids, as in COCO (1..90 with gaps).
_CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 90, "name": "fox"}]
_IMAGE_SIZES = {1: (30, 40), 2: (20, 24), 3: (16, 16)}  # id -> (height, width)


def _base_coco():
  return {
      "images": [{"id": i, "file_name": f"im{i}.png", "height": h, "width": w}
                 for i, (h, w) in _IMAGE_SIZES.items()],
      "annotations": [
          {"id": 11, "image_id": 1, "category_id": 7, "bbox": [4.0, 2.0, 10.0, 20.0],
           "iscrowd": 0},
          {"id": 12, "image_id": 1, "category_id": 90, "bbox": [0, 0, 40, 30], "iscrowd": 0},
          {"id": 13, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
          # Image 3 has no annotations: a valid negative.
      ],
      "categories": copy.deepcopy(_CATEGORIES),
  }


@pytest.fixture
def dataset_dir(tmp_path):
  """Writes the images; returns (tmp_path, write_json) where write_json(coco) -> json path."""
  for image_id, (height, width) in _IMAGE_SIZES.items():
    pixels = np.full((height, width, 3), image_id * 40, np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"im{image_id}.png")

  def write_json(coco):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return str(path)

  return tmp_path, write_json


def _load(dataset_dir, coco, on_bad):
  image_dir, write_json = dataset_dir
  path = write_json(coco)
  return path, coco_reader.load_coco_index(path, str(image_dir), on_bad=on_bad)


def _boxes_by_image(index):
  return {r.image_id: (r.boxes.tolist(), r.classes.tolist()) for r in index}


def test_raw_examples_follow_the_design_format(dataset_dir):
  image_dir, write_json = dataset_dir
  dataset, info = coco_reader.coco_dataset(write_json(_base_coco()), str(image_dir))
  examples = {int(e["image_id"]): e for e in dataset}
  assert sorted(examples) == [1, 2, 3]
  first = examples[1]
  assert first["image"].dtype == "uint8" and first["image"].shape == (30, 40, 3)
  assert int(first["image"][0, 0, 0]) == 40
  assert first["image_id"].dtype == "int64"
  assert first["boxes"].dtype == "float32" and first["classes"].dtype == "int32"
  # [x, y, w, h] -> [ymin, xmin, ymax, xmax]
  np.testing.assert_allclose(first["boxes"], [[2, 4, 22, 14], [0, 0, 30, 40]])
  np.testing.assert_array_equal(first["classes"], [7, 90])
  assert examples[3]["boxes"].shape == (0, 4) and examples[3]["classes"].shape == (0,)
  assert info.num_images == 3 and info.num_boxes == 3 and info.skipped == {}


def test_sparse_category_ids_are_kept(dataset_dir):
  _, (index, info) = _load(dataset_dir, _base_coco(), "error")
  assert info.num_classes == 91
  assert info.category_names == {1: "cat", 7: "dog", 90: "fox"}
  assert _boxes_by_image(index)[2][1] == [1]


def test_crowd_annotations_are_not_targets(dataset_dir):
  coco = _base_coco()
  coco["annotations"][1]["iscrowd"] = 1
  _, (index, info) = _load(dataset_dir, coco, "error")
  assert _boxes_by_image(index)[1][1] == [7]
  assert info.num_crowd == 1 and info.num_boxes == 2


def test_shuffle_keeps_every_image(dataset_dir):
  image_dir, write_json = dataset_dir
  dataset, _ = coco_reader.coco_dataset(write_json(_base_coco()), str(image_dir), shuffle=True,
                                        seed=3)
  ids = [int(e["image_id"]) for e in dataset]
  assert sorted(ids) == [1, 2, 3]


def test_small_border_spill_is_clipped(dataset_dir):
  coco = _base_coco()
  coco["annotations"][0]["bbox"] = [-0.5, 2.0, 41.0, 28.6]  # image 1 is 40 wide, 30 high
  _, (index, info) = _load(dataset_dir, coco, "error")
  assert _boxes_by_image(index)[1][0][0] == pytest.approx([2.0, 0.0, 30.0, 40.0])


# Each case: (mutation of the base dataset, problem kind, text expected in the message).
_ANNOTATION_CASES = {
    "unknown_image_id": (lambda c: c["annotations"][0].update(image_id=99),
                         "unknown_image_id", "annotation id=11"),
    "unknown_category": (lambda c: c["annotations"][0].update(category_id=5),
                         "unknown_category_id", "annotation id=11"),
    "zero_width": (lambda c: c["annotations"][0].update(bbox=[4, 2, 0, 20]),
                   "empty_bbox", "annotation id=11"),
    "negative_height": (lambda c: c["annotations"][0].update(bbox=[4, 2, 10, -3]),
                        "empty_bbox", "annotation id=11"),
    "outside_image": (lambda c: c["annotations"][0].update(bbox=[35, 2, 10, 20]),
                      "bbox_outside_image", "annotation id=11"),
    "three_numbers": (lambda c: c["annotations"][0].update(bbox=[4, 2, 10]),
                      "bad_bbox", "annotation id=11"),
    "not_numbers": (lambda c: c["annotations"][0].update(bbox=["4", 2, 10, 20]),
                    "bad_bbox", "annotation id=11"),
    "nan": (lambda c: c["annotations"][0].update(bbox=[4, 2, float("nan"), 20]),
            "bad_bbox", "annotation id=11"),
}


@pytest.mark.parametrize("case", sorted(_ANNOTATION_CASES))
def test_bad_annotation_is_skipped_and_logged(dataset_dir, case, caplog):
  mutate, reason, where = _ANNOTATION_CASES[case]
  coco = _base_coco()
  mutate(coco)
  with caplog.at_level(logging.WARNING):
    path, (index, info) = _load(dataset_dir, coco, "skip")
  assert info.skipped == {reason: 1}
  # Only annotation 11 is dropped; its image and the other boxes stay.
  assert _boxes_by_image(index)[1][1] == [90]
  assert info.num_images == 3 and info.num_boxes == 2
  logged = [r.getMessage() for r in caplog.records if where in r.getMessage()]
  assert logged and path in logged[0]


@pytest.mark.parametrize("case", sorted(_ANNOTATION_CASES))
def test_bad_annotation_raises_in_error_mode(dataset_dir, case):
  mutate, _, where = _ANNOTATION_CASES[case]
  coco = _base_coco()
  mutate(coco)
  with pytest.raises(DataError, match=where) as raised:
    _load(dataset_dir, coco, "error")
  assert "instances.json" in str(raised.value)


def _remove_image_file(image_dir):
  os.remove(image_dir / "im1.png")


def _corrupt_image_file(image_dir):
  (image_dir / "im1.png").write_bytes(b"this is not an image at all")


def _tiff_image_file(image_dir):
  # Same size and name, but a format PIL opens and tf.io.decode_image cannot decode.
  Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(image_dir / "im1.png", format="TIFF")


def _resize_image_file(image_dir):
  Image.fromarray(np.zeros((31, 40, 3), np.uint8)).save(image_dir / "im1.png")


_IMAGE_CASES = {
    "missing_file": (_remove_image_file, "image_missing"),
    "undecodable_header": (_corrupt_image_file, "image_unreadable"),
    "size_mismatch": (_resize_image_file, "image_size_mismatch"),
    "tiff_format": (_tiff_image_file, "image_unreadable"),
}


@pytest.mark.parametrize("case", sorted(_IMAGE_CASES))
def test_bad_image_file_skips_the_image(dataset_dir, case, caplog):
  spoil, reason = _IMAGE_CASES[case]
  spoil(dataset_dir[0])
  with caplog.at_level(logging.WARNING):
    path, (index, info) = _load(dataset_dir, _base_coco(), "skip")
  assert sorted(r.image_id for r in index) == [2, 3]
  assert info.skipped == {reason: 1, "annotation_of_skipped_image": 2}
  logged = [r.getMessage() for r in caplog.records if "image id=1" in r.getMessage()]
  assert logged and path in logged[0] and "im1.png" in logged[0]


@pytest.mark.parametrize("case", sorted(_IMAGE_CASES))
def test_bad_image_file_raises_in_error_mode(dataset_dir, case):
  spoil, _ = _IMAGE_CASES[case]
  spoil(dataset_dir[0])
  with pytest.raises(DataError, match="image id=1") as raised:
    _load(dataset_dir, _base_coco(), "error")
  assert "instances.json" in str(raised.value) and "im1.png" in str(raised.value)


def test_many_problems_are_counted_but_logged_once_each_up_to_a_limit(dataset_dir, caplog):
  coco = _base_coco()
  coco["annotations"] += [{"id": 100 + k, "image_id": 2, "category_id": 5, "bbox": [1, 1, 2, 2]}
                          for k in range(50)]
  with caplog.at_level(logging.WARNING):
    _, (_, info) = _load(dataset_dir, coco, "skip")
  assert info.skipped == {"unknown_category_id": 50}
  per_annotation = [r for r in caplog.records if "annotation id=1" in r.getMessage()]
  assert 10 <= len(per_annotation) <= 25


@pytest.mark.parametrize("on_bad", ["skip", "error"])
def test_duplicate_image_ids_drop_both(dataset_dir, on_bad):
  coco = _base_coco()
  coco["images"][1]["id"] = 1
  if on_bad == "error":
    with pytest.raises(DataError, match="image id=1"):
      _load(dataset_dir, coco, on_bad)
    return
  _, (index, info) = _load(dataset_dir, coco, on_bad)
  assert [r.image_id for r in index] == [3]
  assert info.skipped["duplicate_image_id"] == 2


@pytest.mark.parametrize("on_bad", ["skip", "error"])
def test_malformed_json_always_raises(dataset_dir, on_bad):
  image_dir, write_json = dataset_dir
  path = write_json(_base_coco())
  with open(path, "a") as f:
    f.write("}{,")
  with pytest.raises(DataError, match="malformed JSON") as raised:
    coco_reader.load_coco_index(path, str(image_dir), on_bad=on_bad)
  assert path in str(raised.value)


@pytest.mark.parametrize("on_bad", ["skip", "error"])
@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key_always_raises(dataset_dir, on_bad, key):
  coco = _base_coco()
  del coco[key]
  with pytest.raises(DataError, match=f"missing top-level key '{key}'") as raised:
    _load(dataset_dir, coco, on_bad)
  assert "instances.json" in str(raised.value)


def test_missing_annotation_file_raises(tmp_path):
  with pytest.raises(DataError, match="nope.json"):
    coco_reader.load_coco_index(str(tmp_path / "nope.json"), str(tmp_path))


def test_duplicate_category_id_raises(dataset_dir):
  coco = _base_coco()
  coco["categories"].append({"id": 7, "name": "wolf"})
  with pytest.raises(DataError, match=r"categories\[3\].*duplicate category id 7"):
    _load(dataset_dir, coco, "skip")


def test_no_usable_image_raises(dataset_dir):
  coco = _base_coco()
  for image in coco["images"]:
    image["file_name"] = "gone.png"
  with pytest.raises(DataError, match="no usable images"):
    _load(dataset_dir, coco, "skip")


def test_unknown_policy_is_rejected(dataset_dir):
  with pytest.raises(ValueError, match="on_bad"):
    _load(dataset_dir, _base_coco(), "ignore")
