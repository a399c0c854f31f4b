"""The pre-training report says what it scanned: a sample of the data, not the data."""

import numpy as np
import tensorflow as tf

from nasfpn_tf import trainer
from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.data.diagnostics import DataReport, inspect_training_data


def test_summary_says_it_is_a_sample_of_how_many():
  report = DataReport(64, [1, 2, 5], 9.25, 3, batches=4, total_images=1500)
  assert report.summary() == ("a sample of 64 of 1,500 images (4 batches): class ids [1, 2, 5], "
                              "9.2 positive anchors per image, 3 of them with no positive anchor")
  assert DataReport(32, [1], 1.0, 0, 4, None).summary().startswith(
      "a sample of 32 images (4 batches): ")
  # A set smaller than the sample is repeated to fill the batches: say so, not "32 of 12".
  assert DataReport(32, [1], 1.0, 0, 4, 12).summary().startswith(
      "32 images drawn from all 12 (4 batches): ")


def test_inspect_counts_the_batches_it_scanned():
  model = load_config(params_override="task.model.num_classes=6").task.model
  cls = np.full((3, 10), -1, np.int32)
  cls[0, :2] = 4
  cls[1, 5] = 2  # image 2 has no positive anchor
  data = tf.data.Dataset.from_tensors((np.zeros((3, 8, 8, 3), np.float32),
                                       {"cls_targets": cls})).repeat()
  report = inspect_training_data(data, model, max_batches=2, total_images=400)
  assert (report.images, report.batches, report.total_images) == (6, 2, 400)
  assert report.class_ids == [2, 4] and report.images_without_positives == 2
  assert report.summary().startswith("a sample of 6 of 400 images (2 batches): class ids [2, 4]")


def test_trainer_prints_the_sample_and_the_dataset_size(tmp_path, capsys):
  config = load_config("configs/shapes_fpn.yaml", [
      "task.model.input_size=[128,128]", f"task.train_data.embedded_dir={tmp_path}",
      "task.train_data.embedded_num_images=20", "task.train_data.embedded_image_size=64",
      "task.train_data.global_batch_size=4"])
  run = trainer._Run(config, str(tmp_path / "model"), tf.distribute.get_strategy(), chief=True,
                     verbose=1)
  trainer._train_input(run)
  lines = capsys.readouterr().out.splitlines()
  report = [line for line in lines if line.startswith("Training data:")]
  assert len(report) == 1
  assert report[0].startswith("Training data: a sample of 16 of 20 images (4 batches): class ids ")
