"""Inference-only processes put oneDNN on the system allocator; training keeps TensorFlow's."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import os, sys
sys.argv = ["run.py", "--mode=" + MODE, "--model_dir=/nonexistent/x"]
import run
seen = {}
run._run = lambda: seen.setdefault("env", os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR"))
from absl import app
try:
  app.run(run.main)
except SystemExit:
  pass
print("ENV", seen.get("env"))
"""


def _allocator_env(mode: str, preset: str = None) -> str:
  env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
  if preset is not None:
    env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = preset
  proc = subprocess.run([sys.executable, "-c", f"MODE = {mode!r}\n" + PROBE], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert "ENV" in proc.stdout, proc.stderr[-2000:]
  return proc.stdout.split("ENV")[-1].strip()


def test_inference_modes_use_the_system_allocator_and_training_does_not():
  assert _allocator_env("export") == "1"
  assert _allocator_env("eval") == "1"
  assert _allocator_env("train_and_eval") == "None"
  assert _allocator_env("search") == "None"


def test_the_users_choice_wins():
  assert _allocator_env("export", preset="0") == "0"
