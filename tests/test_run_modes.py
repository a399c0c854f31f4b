"""`run.py --mode=eval` and `--mode=export` use the config the model was trained with."""

from __future__ import annotations

import json
import os

import pytest

from tests.run_helpers import run_in_process

TINY_MODEL = ("task.model.input_size=[128,128],task.model.backbone.depth=10,"
              "task.model.backbone.width_multiplier=0.25,task.model.decoder.type=fpn,"
              "task.model.decoder.filters=32,task.model.head.filters=32,"
              "task.model.head.num_convs=1,task.model.detection.pre_nms_top_k=500,"
              "task.model.num_classes=6,task.model.detection.score_threshold=0.0")
# Not the shapes set's names: a label map with these came from MODEL_DIR/config.yaml.
NAMES = ["cat", "dog", "cow", "hen", "owl"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A MODEL_DIR as training leaves it (config.yaml, model.keras, checkpoint), untrained
  weights, validation data whose categories are named NAMES."""
  from nasfpn_tf.configs.loading import load_config, save_yaml
  from nasfpn_tf.data.shapes_dataset import generate_shapes_dataset
  from nasfpn_tf.modeling.factory import build_model
  root = tmp_path_factory.mktemp("run_modes")
  val_json, val_dir = generate_shapes_dataset(str(root / "data"), "val", 2, image_size=128)
  coco = json.loads(open(val_json).read())
  for category, name in zip(coco["categories"], NAMES):
    category["name"] = name
  open(val_json, "w").write(json.dumps(coco))
  data = (f"task.validation_data.source=coco,task.validation_data.annotation_file={val_json},"
          f"task.validation_data.image_dir={val_dir},task.validation_data.global_batch_size=2")
  config = load_config("", [TINY_MODEL, data])
  path = root / "model"
  os.makedirs(path)
  save_yaml(config, str(path / "config.yaml"))
  model = build_model(config.task.model)
  model.save(str(path / "model.keras"))
  model.save_weights(str(path / "checkpoint.weights.h5"))
  return path


@pytest.mark.slow
def test_export_without_config_file_reads_model_dir_config(model_dir, tmp_path, capsys):
  export_dir = tmp_path / "export"
  code, err = run_in_process(["--mode=export", f"--model_dir={model_dir}",
                              f"--export_dir={export_dir}"], capsys, expect_exit=False)
  assert code == 0, err
  labels = json.loads((export_dir / "label_map.json").read_text())
  assert labels == {str(i + 1): name for i, name in enumerate(NAMES)}
  assert (export_dir / "config.yaml").read_text() == (model_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_eval_leaves_the_trained_config_as_it_was(model_dir, capsys):
  before = (model_dir / "config.yaml").read_bytes()
  stamp = os.stat(model_dir / "config.yaml").st_mtime_ns
  code, err = run_in_process(["--mode=eval", f"--model_dir={model_dir}"], capsys,
                             expect_exit=False)
  assert code == 0, err
  assert (model_dir / "config.yaml").read_bytes() == before
  assert os.stat(model_dir / "config.yaml").st_mtime_ns == stamp
  metrics = json.loads((model_dir / "eval_results.json").read_text())
  assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
  assert not (model_dir / ".run.lock").exists()
