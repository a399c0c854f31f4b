"""Ray trial workers import search modules to unpickle rewards and the trainable:
none of those modules may load TensorFlow at import."""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_FREE = ["nasfpn_tf.search", "nasfpn_tf.search.rewards", "nasfpn_tf.search.search_space",
           "nasfpn_tf.search.journal", "nasfpn_tf.search.search_directory",
           "nasfpn_tf.search.inline_engine", "nasfpn_tf.search.proxy_task"]


@pytest.mark.parametrize("module", TF_FREE + ["nasfpn_tf.search.ray_engine"])
def test_importing_a_search_module_loads_no_tensorflow(module):
  if module.endswith("ray_engine") and importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed")
  code = (f"import sys, {module}\n"
          "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
  if module in TF_FREE:
    code += "assert 'ray' not in sys.modules\n"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (REPO, os.environ.get("PYTHONPATH")) if p))   # this checkout's package
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
