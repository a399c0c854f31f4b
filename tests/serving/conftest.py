"""Session fixtures for the serving tests: one small trained model, exported once.

Training (about a minute on 2 cores) and each export happen lazily, so the fast tests that
do not ask for them stay fast.
"""

from __future__ import annotations

import os
import types

import pytest

from serving_helpers import NUM_VAL_IMAGES, parity_module, small_config


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  """A trained model dir (model.keras, checkpoint, config.yaml) and its config."""
  from nasfpn_tf.trainer import train_and_evaluate
  root = tmp_path_factory.mktemp("serving")
  config = small_config(str(root / "shapes"))
  model_dir = str(root / "model")
  train_and_evaluate(config, model_dir, mode="train", verbose=0)
  return types.SimpleNamespace(root=str(root), model_dir=model_dir, config=config)


@pytest.fixture(scope="session")
def keras_model(trained):
  from nasfpn_tf.serving import export_lib
  model, _ = export_lib.load_trained_model(trained.model_dir)
  return model


@pytest.fixture(scope="session")
def export_dir(trained):
  """An export folder holding the SavedModel and every TFLite variant."""
  from nasfpn_tf.serving import export_lib
  out = os.path.join(trained.root, "export")
  export_lib.export_from_model_dir(trained.model_dir, out, "saved_model")
  export_lib.export_from_model_dir(trained.model_dir, out, "tflite",
                                   num_calibration_images=NUM_VAL_IMAGES)
  return out


@pytest.fixture(scope="session")
def validation(trained):
  """The validation split: raw examples, COCO ground truth, preprocessed images."""
  parity = parity_module()
  examples, gt = parity.load_examples(trained.config, NUM_VAL_IMAGES)
  return parity.Evaluation(examples, gt, trained.config.task.model.input_size)
