"""TFRecords round-trip raw examples; per-worker input shards partition the data."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from nasfpn_tf.configs.experiment import DataConfig
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.data import input_pipeline, tfrecord, tfrecord_writer
from nasfpn_tf.data.coco_reader import DataError
from tests.distribute import _helpers as h


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> DataConfig:
  root = tmp_path_factory.mktemp("shapes")
  return DataConfig(source="embedded", embedded_dir=str(root), embedded_num_images=10,
                    embedded_image_size=128, is_training=False)


def _tiny_model_config():
  return load_config("", h.TINY_MODEL).task.model


def _ids(ds) -> list[int]:
  return [int(e["image_id"]) for e in ds.as_numpy_iterator()]


def _context(i: int, n: int) -> tf.distribute.InputContext:
  return tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i,
                                    num_replicas_in_sync=n)


def test_tfrecords_hold_the_source_examples(shapes, tmp_path):
  pattern = tfrecord_writer.write_tfrecords(shapes, str(tmp_path / "rec" / "train"), num_shards=3)
  files = sorted(os.listdir(tmp_path / "rec"))
  assert files == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)] + ["train.meta.json"]
  ds, info = tfrecord.tfrecord_dataset(pattern)
  source, source_info = input_pipeline.raw_dataset(shapes)
  got, want = list(ds.as_numpy_iterator()), list(source.as_numpy_iterator())
  assert len(got) == len(want) == 10
  for a, b in zip(got, want):  # same order: consecutive images per shard, read in order
    assert a["image_id"] == b["image_id"] and a["image"].dtype == np.uint8
    np.testing.assert_array_equal(a["image"], b["image"])  # the JPEG bytes, not re-encoded
    np.testing.assert_allclose(a["boxes"], b["boxes"])
    np.testing.assert_array_equal(a["classes"], b["classes"])
  assert info.num_classes == source_info.num_classes == 6
  assert info.category_names == source_info.category_names
  assert info.num_images == 10 and info.num_boxes == source_info.num_boxes


def test_tfrecords_from_a_decoded_source(shapes, tmp_path):
  first = tfrecord_writer.write_tfrecords(shapes, str(tmp_path / "a" / "x"), num_shards=2)
  again = dataclasses.replace(shapes, source="tfrecord", tfrecord_pattern=first)
  second = tfrecord_writer.write_tfrecords(again, str(tmp_path / "b" / "x"), num_shards=2)
  by_id = {int(e["image_id"]): e for e in tfrecord.tfrecord_dataset(first)[0].as_numpy_iterator()}
  copies = list(tfrecord.tfrecord_dataset(second)[0].as_numpy_iterator())
  assert sorted(int(e["image_id"]) for e in copies) == sorted(by_id)
  for e in copies:  # PNG keeps decoded pixels exact
    np.testing.assert_array_equal(e["image"], by_id[int(e["image_id"])]["image"])


def test_incomplete_tfrecords_are_refused(shapes, tmp_path):
  pattern = tfrecord_writer.write_tfrecords(shapes, str(tmp_path / "t"), num_shards=2)
  os.remove(tfrecord.shard_path(str(tmp_path / "t"), 1, 2))
  with pytest.raises(DataError, match="lacks 1 of the 2 shards"):
    tfrecord.tfrecord_dataset(pattern)
  os.remove(tfrecord.meta_path(str(tmp_path / "t")))
  with pytest.raises(DataError, match="meta.json is missing"):
    tfrecord.tfrecord_dataset(pattern)
  with pytest.raises(DataError, match="matches no file"):
    tfrecord.tfrecord_dataset(str(tmp_path / "nothing-*"))


@pytest.mark.parametrize("source", ["embedded", "tfrecord"])
@pytest.mark.parametrize("num_shards", [1, 4])
def test_worker_shards_partition_the_data(shapes, tmp_path, source, num_shards):
  data = dataclasses.replace(shapes, is_training=True)
  if source == "tfrecord":
    pattern = tfrecord_writer.write_tfrecords(shapes, str(tmp_path / "r"), num_shards=num_shards)
    data = dataclasses.replace(data, source="tfrecord", tfrecord_pattern=pattern)
  shards = [_ids(input_pipeline.raw_dataset(data, _context(i, 2))[0]) for i in range(2)]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == list(range(1, 11))


def test_deterministic_order_does_not_depend_on_earlier_iterators(shapes):
  data = dataclasses.replace(shapes, is_training=True, deterministic=True)
  ds, _ = input_pipeline.raw_dataset(data)
  first = _ids(ds)
  assert first != sorted(first)  # shuffled...
  assert _ids(ds) == first  # ...the same way for the next iterator
  assert _ids(input_pipeline.raw_dataset(data)[0]) == first  # and for a new pipeline


def test_per_replica_batches_under_an_input_context(shapes):
  model = _tiny_model_config()
  data = dataclasses.replace(shapes, is_training=True, global_batch_size=4)
  ds, _ = input_pipeline.build_dataset(data, model, _context(1, 2))
  images, labels = next(iter(ds))
  assert images.shape == (2, 128, 128, 3)
  assert labels["cls_targets"].shape[0] == 2
