"""Drops known-harmless lines that TensorFlow's C++ code writes to stderr during a conversion.

The TFLite converter logs at ERROR level, for every conversion of our graphs,

  E... node_def_util.cc:682] NodeDef mentions attribute Truncate which is not in the op
  definition: Op<name=Identity; ...> ... Unknown attributes will be ignored.

(a Cast rewritten into an Identity by TensorFlow's own graph optimizer keeps the Cast's
attribute; the converted file is not affected). It looks like a failure to a user, and
TF_CPP_MIN_LOG_LEVEL=3 would silence real errors with it, so only those lines are dropped:
the C++ code writes to file descriptor 2 directly, which Python's logging cannot filter, so
the descriptor is pointed at a pipe whose lines are forwarded, live, minus the noise.

Example:
  with filtered_stderr():
    data = converter.convert()
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator, Sequence

# Substrings of the lines dropped (each must name one harmless message exactly).
CONVERTER_NOISE = ("NodeDef mentions attribute Truncate which is not in the op definition",)


@contextlib.contextmanager
def filtered_stderr(noise: Sequence[str] = CONVERTER_NOISE) -> Iterator[None]:
  """Within the block, lines written to file descriptor 2 that contain any of `noise` are
  dropped; every other line reaches stderr as it is written."""
  patterns = [n.encode() for n in noise]
  sys.stderr.flush()
  saved = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)

  def forward() -> None:
    with os.fdopen(read_end, "rb") as pipe:
      for line in pipe:
        if not any(p in line for p in patterns):
          os.write(saved, line)

  thread = threading.Thread(target=forward, name="stderr_filter", daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the forwarder reads to the end
    thread.join()
    os.close(saved)
