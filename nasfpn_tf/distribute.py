"""tf.distribute strategies from `RuntimeConfig`."""

from __future__ import annotations

import tensorflow as tf
from absl import logging

from nasfpn_tf.configs.experiment import RuntimeConfig


def ensure_logical_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices (must run before TF initialises devices)."""
  cpus = tf.config.list_physical_devices("CPU")
  current = tf.config.get_logical_device_configuration(cpus[0])
  if current and len(current) >= count:
    return
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def build_strategy(config: RuntimeConfig) -> tf.distribute.Strategy:
  """`default`: one device; `mirrored`: all local GPUs (or `num_cpu_devices` logical CPUs
  when there is no GPU); `multi_worker`: MultiWorkerMirroredStrategy from TF_CONFIG;
  `tpu`: TPUStrategy on `config.tpu`."""
  if config.strategy == "default":
    return tf.distribute.get_strategy()
  if config.strategy == "mirrored":
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
      return tf.distribute.MirroredStrategy()
    count = max(config.num_cpu_devices, 1)
    ensure_logical_cpus(count)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:count]
    logging.info("No GPU: mirroring over %d logical CPU devices", len(devices))
    return tf.distribute.MirroredStrategy(devices)
  if config.strategy == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if config.strategy == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"runtime.strategy: unknown strategy '{config.strategy}'")
