"""stderr_filter drops the converter's known-harmless lines and nothing else."""

from __future__ import annotations

import os

from nasfpn_tf.serving.stderr_filter import CONVERTER_NOISE, filtered_stderr

NOISE = ("E0000 00:00:1796081014.456969   22532 node_def_util.cc:682] NodeDef mentions attribute "
         "Truncate which is not in the op definition: Op<name=Identity; signature=input:T -> "
         "output:T; attr=T:type> Unknown attributes will be ignored. NodeDef: {{node unnamed}}\n")


def test_drops_only_the_listed_lines(capfd):
  with filtered_stderr():
    os.write(2, b"before the noise\n")
    os.write(2, NOISE.encode())
    os.write(2, b"E0000 converter.cc:1] a real error\n")
  os.write(2, NOISE.encode())  # outside the block: not filtered
  err = capfd.readouterr().err
  assert err.splitlines() == ["before the noise", "E0000 converter.cc:1] a real error",
                              NOISE.strip()]
  assert any(n in NOISE for n in CONVERTER_NOISE)


def test_restores_stderr_after_an_exception(capfd):
  try:
    with filtered_stderr():
      os.write(2, b"kept\n")
      raise RuntimeError("conversion failed")
  except RuntimeError:
    pass
  os.write(2, b"after\n")
  assert capfd.readouterr().err.splitlines() == ["kept", "after"]
