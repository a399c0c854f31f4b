"""Shared by the distribution tests: a tiny experiment and subprocess plumbing."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "distribute", "worker.py")

# ResNet-10 at a quarter width, FPN and head of 32 filters at 128x128: seconds per step on CPU.
TINY_MODEL = ("task.model.input_size=[128,128],task.model.backbone.depth=10,"
              "task.model.backbone.width_multiplier=0.25,task.model.decoder.type=fpn,"
              "task.model.decoder.filters=32,task.model.head.filters=32,"
              "task.model.head.num_convs=1,task.model.detection.pre_nms_top_k=500,"
              "task.model.num_classes=6")


def tiny_data(data_dir: str, num_images: int = 16, batch: int = 4,
              augment: bool = True) -> str:
  """Embedded shapes at 128 px under `data_dir` (generated on first use)."""
  parts = []
  for split, n in (("train_data", num_images), ("validation_data", 8)):
    parts.append(f"task.{split}.embedded_dir={data_dir},task.{split}.embedded_image_size=128,"
                 f"task.{split}.embedded_num_images={n},task.{split}.global_batch_size={batch}")
  if not augment:
    parts.append("task.train_data.aug_rand_hflip=false,task.train_data.aug_scale_min=1.0,"
                 "task.train_data.aug_scale_max=1.0")
  return ",".join(parts)


def free_ports(count: int) -> list[int]:
  """Ports the OS reports free now (bound together, so they are distinct)."""
  socks = [socket.socket() for _ in range(count)]
  try:
    for s in socks:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in socks]
  finally:
    for s in socks:
      s.close()


def env(**extra) -> dict:
  out = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **extra)
  out.pop("TF_CONFIG", None)
  out.update(extra)
  return out


def write_spec(path: str, runs: list[dict], logical_cpus: int = 0) -> str:
  with open(path, "w") as f:
    json.dump({"logical_cpus": logical_cpus, "runs": runs}, f)
  return path


def run_worker(spec_path: str, timeout: float, **extra_env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, WORKER, spec_path], capture_output=True, text=True,
                        timeout=timeout, env=env(**extra_env), cwd=ROOT)
