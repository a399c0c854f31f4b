"""Input pipeline throughput next to training throughput, measured in one run.

  python bench/input_pipeline.py                       # 640x640, batch 8, embedded shapes
  python bench/input_pipeline.py --batch=16 --images=256 --steps=20
  python bench/input_pipeline.py --model_override=task.model.backbone.depth=50,...

Measures, on this machine:
  1. the training input pipeline (decode, flip, scale jitter 0.8-1.2, resize/crop/pad to
     640x640, anchor labelling, batching, prefetch) reading the COCO-format json + JPEG files,
  2. the same pipeline reading TFRecords written from those files (`source: tfrecord`),
  3. `model.fit` steps of a model on one cached batch (the input costs nothing there).
The model defaults to a small one (ResNet-18 at half width, FPN and a 2-conv head of 64
filters; override with --model_override) so that the run takes minutes on a laptop CPU. The
pipeline should deliver well above the training rate, or the accelerator waits for data.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("size", 640, "Model input size (square).")
flags.DEFINE_integer("batch", 8, "Global batch size.")
flags.DEFINE_integer("images", 128, "Embedded shapes images to generate (at --size px).")
flags.DEFINE_integer("batches", 40, "Input batches to time (after 5 of warm-up).")
flags.DEFINE_integer("steps", 10, "Training steps to time (after the compiling call).")
flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "nasfpn_bench_data"),
                    "Where the embedded images and TFRecords go (reused between runs).")
flags.DEFINE_string("model_override", "task.model.backbone.depth=18,"
                    "task.model.backbone.width_multiplier=0.5,task.model.decoder.type=fpn,"
                    "task.model.decoder.filters=64,task.model.head.filters=64,"
                    "task.model.head.num_convs=2", "The model to time (params_override syntax).")

WARMUP_BATCHES = 5


def _config():
  from nasfpn_tf.configs.loading import load_config
  data = (f"task.model.input_size=[{FLAGS.size},{FLAGS.size}],task.model.num_classes=6,"
          f"task.train_data.embedded_dir={FLAGS.data_dir},"
          f"task.train_data.embedded_image_size={FLAGS.size},"
          f"task.train_data.embedded_num_images={FLAGS.images},"
          f"task.train_data.global_batch_size={FLAGS.batch},"
          f"task.train_data.shuffle_buffer_size={FLAGS.images}")
  return load_config("", [data, FLAGS.model_override])


def pipeline_images_per_second(data, model_config) -> float:
  """Images/s the training pipeline delivers to a consumer that does nothing."""
  from nasfpn_tf.data.input_pipeline import build_dataset
  ds, _ = build_dataset(data, model_config)
  it = iter(ds)
  for _ in range(WARMUP_BATCHES):  # fills prefetch buffers and lets AUTOTUNE settle
    next(it)
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    images, _ = next(it)
  images.numpy()
  return FLAGS.batches * data.global_batch_size / (time.perf_counter() - start)


class _StepTimer:
  """Wall time of the fit steps after the first (which traces and compiles)."""

  def __init__(self):
    import keras

    class Timer(keras.callbacks.Callback):
      def on_train_batch_end(cb, batch, logs=None):
        if batch == 0:
          cb.start = time.perf_counter()
        cb.end = time.perf_counter()
    self.callback = Timer()

  def seconds(self) -> float:
    return self.callback.end - self.callback.start


def train_images_per_second(config) -> float:
  """Images/s of `model.fit` steps on one batch held in memory."""
  import tensorflow as tf
  from nasfpn_tf import trainer
  from nasfpn_tf.data.input_pipeline import build_dataset
  ds, _ = build_dataset(config.task.train_data, config.task.model)
  batch = next(iter(ds))
  cached = tf.data.Dataset.from_tensors(batch).repeat()
  model = trainer.build_compiled_model(config, tf.distribute.get_strategy())
  timer = _StepTimer()
  model.fit(cached, epochs=1, steps_per_epoch=FLAGS.steps + 1, callbacks=[timer.callback],
            verbose=0)
  return FLAGS.steps * config.task.train_data.global_batch_size / timer.seconds()


def main(argv) -> None:
  del argv
  import tensorflow as tf
  from nasfpn_tf.data import tfrecord_writer
  config = _config()
  data = config.task.train_data
  prefix = os.path.join(FLAGS.data_dir, "tfrecords", f"train_{FLAGS.size}px_{FLAGS.images}")
  pattern = f"{prefix}-*.tfrecord"
  if not tf.io.gfile.glob(pattern):
    pattern = tfrecord_writer.write_tfrecords(dataclasses.replace(data, is_training=True),
                                              prefix, num_shards=8)
  json_rate = pipeline_images_per_second(data, config.task.model)
  record_rate = pipeline_images_per_second(
      dataclasses.replace(data, source="tfrecord", tfrecord_pattern=pattern), config.task.model)
  train_rate = train_images_per_second(config)
  m = config.task.model
  print(f"machine: {os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}"
        f"; input {FLAGS.size}x{FLAGS.size}, batch {FLAGS.batch}")
  print(f"model: ResNet-{m.backbone.depth} x{m.backbone.width_multiplier:g}, "
        f"{m.decoder.type} {m.decoder.filters} filters, head {m.head.num_convs} x "
        f"{m.head.filters}")
  print(f"input pipeline (json + JPEG files): {json_rate:8.1f} images/s")
  print(f"input pipeline (TFRecords):         {record_rate:8.1f} images/s")
  print(f"train step (model.fit):             {train_rate:8.1f} images/s")
  print(f"pipeline / train: {min(json_rate, record_rate) / train_rate:.1f}x")


if __name__ == "__main__":
  app.run(main)
