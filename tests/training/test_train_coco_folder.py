"""End to end: run.py trains on an arbitrary COCO-format folder and AP rises above zero."""

import json
import os
import subprocess
import sys

import pytest

from nasfpn_tf.data.shapes_dataset import generate_shapes_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_MODEL = ("task.model.input_size=[128,128],task.model.backbone.depth=10,"
              "task.model.backbone.width_multiplier=0.25,task.model.decoder.type=fpn,"
              "task.model.decoder.filters=32,task.model.head.filters=32,"
              "task.model.head.num_convs=1,task.model.detection.pre_nms_top_k=500")


@pytest.mark.slow
def test_run_py_trains_on_a_coco_folder(tmp_path):
  # An "easy" user dataset: large shapes on 128 px images, written as COCO json + images.
  train_json, train_dir = generate_shapes_dataset(str(tmp_path / "data"), "train", 96,
                                                  image_size=128, seed=3)
  val_json, val_dir = generate_shapes_dataset(str(tmp_path / "data"), "val", 24,
                                              image_size=128, seed=3)
  model_dir = tmp_path / "model"
  data = (f"task.train_data.source=coco,task.train_data.annotation_file={train_json},"
          f"task.train_data.image_dir={train_dir},task.validation_data.source=coco,"
          f"task.validation_data.annotation_file={val_json},"
          f"task.validation_data.image_dir={val_dir},task.train_data.global_batch_size=8,"
          "task.model.num_classes=6")
  schedule = ("trainer.train_steps=240,trainer.validation_interval=120,"
              "trainer.learning_rate.type=cosine,trainer.learning_rate.base_lr=0.08,"
              "trainer.learning_rate.base_batch_size=8,trainer.learning_rate.warmup_steps=20")
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--mode=train_and_eval",
         f"--model_dir={model_dir}", "--noexport_after_training",
         f"--params_override={TINY_MODEL},{data},{schedule}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "AP50" in proc.stdout
  metrics = json.loads((model_dir / "eval_results.json").read_text())
  assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
  assert all(0.0 <= v <= 1.0 for v in metrics.values())
  assert metrics["AP50"] > 0.05, metrics
  assert (model_dir / "model.keras").exists() and (model_dir / "checkpoint.weights.h5").exists()
  assert any(n.startswith("events") for _, _, files in os.walk(model_dir / "logs") for n in files)
