"""file_io: atomic writes on local disk and on TensorFlow's in-memory `ram://` filesystem (which
stands in for gs:// offline), and the cleanup of what a killed writer leaves."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
import yaml

from nasfpn_tf import file_io
from nasfpn_tf.configs.experiment import ExperimentConfig
from nasfpn_tf.configs.loading import load_config, save_yaml
from nasfpn_tf.evaluation import coco_evaluator
from nasfpn_tf.visualize import save_figure_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", "ram"])
def folder(request, tmp_path):
  if request.param == "local":
    yield str(tmp_path)
    return
  path = f"ram://file_io_test_{uuid.uuid4().hex}"
  file_io.makedirs(path)
  yield path
  file_io.remove(path)


def _names(folder: str) -> list[str]:
  return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(folder))


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_writes_and_reads_back_without_temp_files(folder):
  file_io.write_text(os.path.join(folder, "a.txt"), "héllo\n")
  file_io.write_bytes(os.path.join(folder, "b.bin"), b"\x00\xff")
  file_io.write_json(os.path.join(folder, "c.json"), {"AP": 0.5})
  file_io.write_yaml(os.path.join(folder, "d.yaml"), {"z": 1, "a": [1, 2]})
  file_io.write_text(os.path.join(folder, "a.txt"), "second")   # replaces
  assert _names(folder) == ["a.txt", "b.bin", "c.json", "d.yaml"]
  assert file_io.read_text(os.path.join(folder, "a.txt")) == "second"
  with tf.io.gfile.GFile(os.path.join(folder, "b.bin"), "rb") as f:
    assert f.read() == b"\x00\xff"
  assert json.loads(file_io.read_text(os.path.join(folder, "c.json"))) == {"AP": 0.5}
  text = file_io.read_text(os.path.join(folder, "d.yaml"))
  assert text.index("z:") < text.index("a:")   # the given key order is kept
  assert yaml.safe_load(text) == {"z": 1, "a": [1, 2]}
  assert file_io.glob(os.path.join(folder, "*.json")) == [os.path.join(folder, "c.json")]


def test_library_writers_reach_a_non_local_folder(folder):
  # Before file_io these used open()/os.replace and failed on the first write to gs://.
  config = ExperimentConfig()
  save_yaml(config, os.path.join(folder, "config.yaml"))
  coco_evaluator.write_json_atomic({"AP": 0.25}, os.path.join(folder, "eval_results.json"))
  fig = plt.figure()
  save_figure_atomic(fig, os.path.join(folder, "sub", "plot.png"))
  assert _names(folder) == ["config.yaml", "eval_results.json", "sub"]
  with tf.io.gfile.GFile(os.path.join(folder, "sub", "plot.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert json.loads(file_io.read_text(os.path.join(folder, "eval_results.json"))) == {"AP": 0.25}
  assert yaml.safe_load(file_io.read_text(os.path.join(folder, "config.yaml"))
                        )["task"]["model"]["num_classes"] == 91


def test_keras_saves_through_atomic_save(folder):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  weights = os.path.join(folder, "checkpoint.weights.h5")
  file_io.atomic_save(model.save_weights, weights)
  file_io.atomic_save(model.save, os.path.join(folder, "model.keras"))
  assert _names(folder) == ["checkpoint.weights.h5", "model.keras"]
  other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  other.load_weights(weights)
  loaded = keras.models.load_model(os.path.join(folder, "model.keras"))
  for a, b, c in zip(model.get_weights(), other.get_weights(), loaded.get_weights()):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(folder):
  path = os.path.join(folder, "checkpoint.weights.h5")
  file_io.write_text(path, "good")
  seen = []

  def crash(tmp):
    seen.append(tmp)
    file_io.write_text(tmp, "half")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    file_io.atomic_save(crash, path)
  assert seen[0].endswith(".weights.h5") and ".tmp-" in seen[0]   # Keras needs the extension
  assert file_io.read_text(path) == "good"
  assert _names(folder) == ["checkpoint.weights.h5"]


def test_a_failed_rename_leaves_no_temp(folder, monkeypatch):
  def fail(src, dst, overwrite=False):
    raise OSError("rename failed")
  monkeypatch.setattr(tf.io.gfile, "rename", fail)
  with pytest.raises(OSError, match="rename failed"):
    file_io.write_bytes(os.path.join(folder, "model_float32.tflite"), b"data")
  assert _names(folder) == []


def test_a_folder_replaces_the_previous_folder(tmp_path):
  # Local only: ram:// cannot rename folders (gs:// can); file_io refuses there.
  folder = str(tmp_path)
  path = os.path.join(folder, "saved_model")

  def write(marker):
    def save(tmp):
      file_io.makedirs(tmp)
      file_io.write_text(os.path.join(tmp, "marker"), marker)
    return save

  file_io.atomic_save(write("one"), path)
  assert _names(folder) == ["saved_model"]
  file_io.atomic_save(write("two"), path)
  assert _names(folder) == ["saved_model"]
  assert _names(path) == ["marker"]
  assert file_io.read_text(os.path.join(path, "marker")) == "two"


def test_temp_names(tmp_path):
  assert file_io.temp_path("run/model.keras").startswith(f"run/.model.tmp-{os.getpid()}-")
  assert file_io.temp_path("run/model.keras").endswith(".keras")
  shard = file_io.temp_path("d/train-00000-of-00004.tfrecord", keep_extension=False)
  assert shard.startswith("d/.train-00000-of-00004.tfrecord.tmp-")
  assert not shard.endswith(".tfrecord")
  assert file_io.temp_path("a/b") != file_io.temp_path("a/b")


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
  dead = _dead_pid()
  for name in (f"checkpoint.tmp-{dead}-0123abcd.weights.h5", f"model.tmp-{dead}-0123abcd.keras",
               f"saved_model.tmp-{dead}-89abcdef", f"mine.tmp-{os.getpid()}-0123abcd.json",
               "notes.tmp-draft.txt", "model.keras"):
    (tmp_path / name).write_text("x")
  os.makedirs(tmp_path / f"saved_model.tmp-{dead}-89abcdee" / "variables")
  removed = file_io.clean_stale_temp_files(str(tmp_path))
  assert sorted(os.path.basename(p) for p in removed) == [
      f"checkpoint.tmp-{dead}-0123abcd.weights.h5", f"model.tmp-{dead}-0123abcd.keras",
      f"saved_model.tmp-{dead}-89abcdee", f"saved_model.tmp-{dead}-89abcdef"]
  # A live writer's file (ours) and files that only look alike stay.
  assert sorted(os.listdir(tmp_path)) == [f"mine.tmp-{os.getpid()}-0123abcd.json",
                                          "model.keras", "notes.tmp-draft.txt"]
  assert file_io.clean_stale_temp_files(str(tmp_path / "missing")) == []


def test_stale_temp_files_on_a_remote_folder():
  folder = f"ram://stale_{uuid.uuid4().hex}"
  file_io.write_text(f"{folder}/model.tmp-1-0123abcd.keras", "x")   # another machine's pid
  file_io.write_text(f"{folder}/model.tmp-{os.getpid()}-0123abcd.keras", "x")
  file_io.makedirs(f"{folder}/saved_model.tmp-2-0123abcd/variables")
  file_io.clean_stale_temp_files(folder)
  assert _names(folder) == [f"model.tmp-{os.getpid()}-0123abcd.keras"]
  file_io.remove(folder)


_WRITER = """
import sys, time
from nasfpn_tf import file_io
def save(tmp):
  with open(tmp, "w") as f:
    f.write("half")
  print(tmp, flush=True)
  time.sleep(600)
file_io.atomic_save(save, sys.argv[1])
"""


def test_kill_during_a_write_then_cleanup(tmp_path):
  path = tmp_path / "model.keras"
  path.write_text("good")
  proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  try:
    tmp = proc.stdout.readline().strip()   # the writer is mid-write now
    assert os.path.exists(tmp), tmp
    assert file_io.stale_temp_files(str(tmp_path)) == []   # its writer is alive: kept
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
  assert sorted(os.listdir(tmp_path)) == sorted(["model.keras", os.path.basename(tmp)])
  assert file_io.clean_stale_temp_files(str(tmp_path)) == [tmp]
  assert os.listdir(tmp_path) == ["model.keras"] and path.read_text() == "good"


def test_ram_folders_are_refused_not_lost():
  folder = f"ram://dirs_{uuid.uuid4().hex}"

  def save(tmp):
    file_io.makedirs(tmp)
    file_io.write_text(os.path.join(tmp, "marker"), "x")

  with pytest.raises(NotImplementedError, match="ram:// cannot rename the folder"):
    file_io.atomic_save(save, os.path.join(folder, "saved_model"))
  assert _names(folder) == []
