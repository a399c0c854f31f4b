"""run.py's modes as the README shows them: draw, make_tfrecords, eval (train: elsewhere)."""

import json
import os
import subprocess
import sys

import pytest

from tests.distribute import _helpers as h


def _run(*flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, os.path.join(h.ROOT, "run.py"), *flags],
                        capture_output=True, text=True, timeout=timeout, env=h.env(), cwd=h.ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_draw_writes_the_configured_architecture(tmp_path):
  out = tmp_path / "drawings" / "nasfpn.png"   # the folder does not exist yet
  proc = _run("--mode=draw", "--config_file=configs/retinanet_r50_nasfpn_640_coco.yaml",
              f"--output={out}")
  assert proc.stdout.strip().splitlines()[-1].endswith(f": {out}")   # 'title: path'
  data = out.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  assert os.listdir(tmp_path / "drawings") == ["nasfpn.png"]


def test_make_tfrecords_writes_both_splits(tmp_path):
  data = h.tiny_data(str(tmp_path / "data"), num_images=6)
  proc = _run("--mode=make_tfrecords", "--config_file=", f"--params_override={data}",
              f"--output={tmp_path / 'rec'}")
  patterns = [l for l in proc.stdout.strip().splitlines() if l.endswith(".tfrecord")]
  assert patterns == [f"{tmp_path}/rec/train-*-of-00001.tfrecord",
                      f"{tmp_path}/rec/val-*-of-00001.tfrecord"]
  for split, count in (("train", 6), ("val", 8)):
    meta = json.loads((tmp_path / "rec" / f"{split}.meta.json").read_text())
    assert meta["num_images"] == count and meta["shards"] == [f"{split}-00000-of-00001.tfrecord"]
    assert meta["num_boxes"] > count   # every shapes image holds objects
  assert sorted(os.listdir(tmp_path / "rec")) == [
      "train-00000-of-00001.tfrecord", "train.meta.json",
      "val-00000-of-00001.tfrecord", "val.meta.json"]


@pytest.mark.slow
def test_eval_mode_scores_the_trained_checkpoint(tmp_path):
  model_dir = tmp_path / "m"
  override = (f"--params_override={h.TINY_MODEL},{h.tiny_data(str(tmp_path / 'data'), batch=2)},"
              "trainer.train_steps=2,trainer.validation_interval=2,trainer.backup_interval=2,"
              "trainer.checkpoint_interval=2,trainer.learning_rate.warmup_steps=0")
  _run("--mode=train", "--config_file=", f"--model_dir={model_dir}", override)
  assert not (model_dir / "eval_results.json").exists()
  proc = _run("--mode=eval", "--config_file=", f"--model_dir={model_dir}", override)
  metrics = json.loads((model_dir / "eval_results.json").read_text())
  assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
  assert all(-1.0 <= v <= 1.0 for v in metrics.values())
  assert "AP50" in proc.stdout and f"{metrics['AP50']:.3f}" in proc.stdout, proc.stdout
  assert not [n for n in os.listdir(model_dir) if ".tmp-" in n]
