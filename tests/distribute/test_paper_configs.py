"""The shipped COCO experiments load, follow the paper's recipe, and build their models."""

import os
import time

import keras
import pytest

from nasfpn_tf.configs.loading import load_config
from nasfpn_tf.modeling.factory import build_model, count_params
from nasfpn_tf.training.checks import check_intervals

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")
EPOCH = 1848  # 118,287 COCO train images / batch 64
# Model Garden's parameter counts of its R-50 models with 91 classes, batch-norm statistics
# included as it counts them (docs: nasfpn-facts.md).
MODEL_GARDEN_PARAMS = {"nasfpn": 60_178_967, "fpn": 34_167_319}

PAPER = {
    "retinanet_r50_nasfpn_640_coco.yaml": ("nasfpn", 256, 640, 50, "mirrored"),
    "retinanet_r50_fpn_640_coco.yaml": ("fpn", 256, 640, 50, "mirrored"),
    "retinanet_r50_nasfpn_640_coco_tpu.yaml": ("nasfpn", 256, 640, 50, "tpu"),
    "retinanet_r50_nasfpn_7x384_1280_coco.yaml": ("nasfpn", 384, 1280, 150, "mirrored"),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_recipe(name):
  decoder, filters, size, epochs, strategy = PAPER[name]
  c = load_config(os.path.join(CONFIGS, name))
  m, t = c.task.model, c.trainer
  assert (m.decoder.type, m.decoder.filters, m.input_size) == (decoder, filters, [size, size])
  assert m.backbone.depth == 50 and m.num_classes == 91
  if decoder == "nasfpn":
    assert m.decoder.num_repeats == 7 and m.decoder.spec == "nasfpn"
    assert m.decoder.use_dropblock == (size == 1280)
  data = c.task.train_data
  assert (data.global_batch_size, data.aug_scale_min, data.aug_scale_max) == (64, 0.8, 1.2)
  assert data.aug_rand_hflip
  assert (t.optimizer.type, t.optimizer.momentum, c.task.losses.l2_weight_decay) == \
      ("sgd", 0.9, 1e-4)
  lr = t.learning_rate
  assert (lr.type, lr.base_lr, lr.base_batch_size) == ("stepwise", 0.08, 64) and lr.warmup_steps
  assert t.train_steps == epochs * EPOCH and t.validation_interval == EPOCH
  # x0.1 at epochs 30 and 40 of 50 (paper); at 90% and 96% of the long schedule.
  expected = [30 * EPOCH, 40 * EPOCH] if epochs == 50 else [135 * EPOCH, 144 * EPOCH]
  assert lr.boundaries == expected and lr.decay_factor == 0.1
  assert c.runtime.strategy == strategy
  assert c.runtime.mixed_precision_dtype == ("bfloat16" if strategy == "tpu" else "float16")
  check_intervals(c)  # steps_per_execution divides every interval


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER))
def test_builds(name):
  c = load_config(os.path.join(CONFIGS, name))
  keras.mixed_precision.set_global_policy("float32")  # structure only; fast on CPU
  start = time.time()
  model = build_model(c.task.model)
  params = count_params(model)["params_total_all"]
  print(f"{name}: {params:,} parameters, built in {time.time() - start:.0f} s")
  decoder, filters, size = PAPER[name][:3]
  if filters == 256:
    assert params == MODEL_GARDEN_PARAMS[decoder]
  else:  # 7@384: wider decoder and head than 7@256
    assert params > MODEL_GARDEN_PARAMS["nasfpn"] * 1.5
  assert model.num_anchors == 9 * sum((size // 2 ** l) ** 2 for l in range(3, 8))
