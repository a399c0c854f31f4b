"""Writes a Model Garden RetinaNet checkpoint and its per-level outputs; runs in the reference venv.

Started by `tests/checkpoints/test_import_modelgarden.py` with the interpreter of the
reference environment (`bash bench/setup_reference.sh`: tf-models-official 2.20, TensorFlow
2.20, tf-keras), never imported by our own code. It builds Model Garden's own model
(`RetinaNetTask.build_model` on the `retinanet_resnetfpn_coco` experiment, through
`bench/modelgarden_worker._model_config`), replaces every weight with random values (kernels,
biases, batch-norm scales, offsets and moving statistics, none of them 0 or 1), and writes:

  DIR/model/ckpt*      tf.train.Checkpoint(model=model), as Model Garden's trainer writes it;
  DIR/backbone/ckpt*   tf.train.Checkpoint(backbone=model.backbone), the layout of Model
                       Garden's ImageNet backbone checkpoints (`init_checkpoint_modules:
                       backbone`);
  DIR/outputs.npz      `image` (already normalised) and, for that image in inference mode,
                       `backbone_P3..`, `decoder_P3..`, `cls_P3..`, `box_P3..`.

  python tests/checkpoints/modelgarden_writer.py --out DIR --depth 18 --num_repeats 2 \
      --size 128 --num_classes 5
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench"))

import modelgarden_worker  # noqa: E402  (standard library only at import)


def randomize(model, seed: int) -> None:
  """Every weight := random values of a trained network's scale (variance kept per conv)."""
  rng = np.random.RandomState(seed)
  for v in model.weights:
    shape = tuple(v.shape)
    name = v.name.split("/")[-1]
    if name.startswith("kernel"):
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
    elif name.startswith("gamma"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.startswith("moving_variance"):
      value = rng.uniform(0.5, 2.0, shape)
    else:  # bias, beta, moving_mean
      value = rng.normal(0.0, 0.2, shape)
    v.assign(value.astype(np.float32))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--depth", type=int, default=18)
  p.add_argument("--decoder", default="nasfpn")
  p.add_argument("--num_repeats", type=int, default=2)
  p.add_argument("--filters", type=int, default=256)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--num_classes", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()

  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from official.vision.tasks import retinanet  # pylint: disable=import-outside-toplevel

  task = retinanet.RetinaNetTask(modelgarden_worker._model_config(  # pylint: disable=protected-access
      args.decoder, args.size, args.num_repeats, args.filters, args.num_classes, args.depth))
  model = task.build_model()
  image = np.random.RandomState(args.seed + 1).normal(
      0.0, 1.0, (1, args.size, args.size, 3)).astype(np.float32)
  model(tf.zeros([1, args.size, args.size, 3]), training=False)  # creates the head's weights
  randomize(model, args.seed)

  tf.train.Checkpoint(model=model).write(os.path.join(args.out, "model", "ckpt"))
  tf.train.Checkpoint(backbone=model.backbone).write(os.path.join(args.out, "backbone", "ckpt"))

  x = tf.constant(image)
  features = model.backbone(x, training=False)
  pyramid = model.decoder(features, training=False)
  scores, boxes, _ = model.head(pyramid, training=False)
  out = {"image": image}
  for level in range(3, 8):
    key = str(level)
    if key in features:
      out[f"backbone_P{level}"] = features[key].numpy()
    out[f"decoder_P{level}"] = pyramid[key].numpy()
    out[f"cls_P{level}"] = scores[key].numpy()
    out[f"box_P{level}"] = boxes[key].numpy()
  np.savez(os.path.join(args.out, "outputs.npz"), **out)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
