"""`run.py` called in the test process: one TensorFlow import for many command lines."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str, path: str):
  """A script that defines absl flags (run.py, export/parity.py), loaded once as module `name`.

  Scripts loaded into one test process may define flags of the same names: the script
  loaded last gets its own definitions (the earlier ones are dropped) instead of a
  DuplicateFlagError.
  """
  if name not in sys.modules:
    with open(path) as f:
      names = re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', f.read())
    for flag in names:
      if flag in flags.FLAGS:
        delattr(flags.FLAGS, flag)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


def run_module():
  """run.py as a module, loaded once per process."""
  return load_script("nasfpn_run_py", os.path.join(ROOT, "run.py"))


def run_in_process(argv: list[str], capsys, expect_exit: bool = True) -> tuple[int, str]:
  """`python run.py ARGV` in this process: (exit code, stderr); 0 when main returns."""
  run = run_module()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["run.py", *argv])
  try:
    if expect_exit:
      with pytest.raises(SystemExit) as exit_info:
        run.main(["run.py"])
      code = exit_info.value.code
    else:
      run.main(["run.py"])
      code = 0
  finally:
    flags.FLAGS.unparse_flags()
  return code, capsys.readouterr().err
