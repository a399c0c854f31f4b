"""Offline tests for the TFDS reader on a tiny COCO-like TFDS dataset built in a temp folder."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nasfpn_tf.data import tfds_reader
from nasfpn_tf.data.coco_reader import DataError

_COCO_NAMES = [name for _, name in tfds_reader.COCO_CATEGORIES]
# image id -> (height, width, objects as (normalised yxyx box, TFDS label, is_crowd)).
_EXAMPLES = {
    101: (20, 40, [((0.1, 0.25, 0.5, 0.75), 0, False),     # person -> id 1
                   ((0.0, 0.0, 1.0, 1.0), 11, True),       # crowd stop sign: dropped
                   ((0.5, 0.5, 0.5, 0.9), 3, False)]),     # zero height: dropped
    102: (16, 16, [((0.25, 0.25, 0.75, 1.0), 79, False),   # toothbrush -> id 90
                   ((0.0, 0.5, 0.5, 1.0), 11, False)]),    # stop sign -> id 13
    103: (8, 12, []),                                      # no objects: a valid negative
}


class TinyCocoForNasfpnTest(tfds.core.GeneratorBasedBuilder):
  """COCO's feature layout with three tiny images; DatasetInfo is explicit so it works offline."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="png"),
            "image/filename": tfds.features.Text(),
            "image/id": np.int64,
            "objects": tfds.features.Sequence({
                "id": np.int64,
                "area": np.int64,
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=_COCO_NAMES),
                "is_crowd": np.bool_,
            }),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for image_id, (height, width, objects) in _EXAMPLES.items():
      yield image_id, {
          "image": np.full((height, width, 3), image_id % 256, np.uint8),
          "image/filename": f"{image_id}.png",
          "image/id": image_id,
          "objects": [{"id": k, "area": 1, "bbox": tfds.features.BBox(*box), "label": label,
                       "is_crowd": crowd} for k, (box, label, crowd) in enumerate(objects)],
      }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  TinyCocoForNasfpnTest(data_dir=path).download_and_prepare()
  return path


def test_tiny_dataset_maps_to_raw_examples(data_dir):
  dataset, info = tfds_reader.tfds_dataset("tiny_coco_for_nasfpn_test", "train", data_dir)
  examples = {int(e["image_id"]): e for e in dataset}
  assert sorted(examples) == [101, 102, 103]
  first = examples[101]
  assert first["image"].dtype == "uint8" and first["image"].shape == (20, 40, 3)
  assert first["boxes"].dtype == "float32" and first["classes"].dtype == "int32"
  np.testing.assert_allclose(first["boxes"], [[2, 10, 10, 30]], atol=1e-4)  # pixels
  np.testing.assert_array_equal(first["classes"], [1])
  np.testing.assert_allclose(examples[102]["boxes"], [[4, 4, 12, 16], [0, 8, 8, 16]], atol=1e-4)
  np.testing.assert_array_equal(examples[102]["classes"], [90, 13])
  assert examples[103]["boxes"].shape == (0, 4) and examples[103]["classes"].shape == (0,)
  assert info.num_classes == 91 and info.num_images == 3
  assert info.category_names[13] == "stop sign" and len(info.category_names) == 80


def test_absent_data_fails_fast_naming_dir_and_flag(tmp_path):
  empty = str(tmp_path / "empty")
  with pytest.raises(DataError, match="download=True") as raised:
    tfds_reader.tfds_dataset("coco/2017", "train", data_dir=empty)
  assert empty in str(raised.value) and "tfds_data_dir" in str(raised.value)


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(DataError, match="no_such_dataset_xyz"):
    tfds_reader.tfds_dataset("no_such_dataset_xyz", data_dir=str(tmp_path))


def test_unknown_split_names_it(data_dir):
  with pytest.raises(DataError, match="'validation'"):
    tfds_reader.tfds_dataset("tiny_coco_for_nasfpn_test", "validation", data_dir)


def test_label_table_is_cocos_80_to_91():
  table = tfds_reader.COCO_LABEL_TO_CATEGORY_ID
  assert len(table) == 80 and len(set(table)) == 80 and max(table) == 90
  assert table[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
  missing = sorted(set(range(1, 91)) - set(table))
  assert missing == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_label_map_by_name_then_by_position():
  reversed_names = list(reversed(_COCO_NAMES))
  assert tfds_reader.coco_label_map(reversed_names)[0] == 90  # "toothbrush" wherever it sits
  unnamed = [str(k) for k in range(80)]
  assert tfds_reader.coco_label_map(unnamed) == tfds_reader.COCO_LABEL_TO_CATEGORY_ID
  with pytest.raises(DataError, match="label_map"):
    tfds_reader.coco_label_map(["a", "b"])


def test_explicit_label_map(data_dir):
  label_map = [k + 200 for k in range(80)]
  dataset, info = tfds_reader.tfds_dataset("tiny_coco_for_nasfpn_test", "train", data_dir,
                                           label_map=label_map)
  classes = {int(e["image_id"]): e["classes"].numpy().tolist() for e in dataset}
  assert classes[102] == [279, 211] and info.num_classes == 280
