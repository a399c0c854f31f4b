"""Which CPU allocator TensorFlow's oneDNN kernels use, by what the process does.

TensorFlow's oneDNN build serves tensors from its own pool (the 'mklcpu' allocator), which grows
and never gives memory back. For inference that costs: our R-50 NAS-FPN 7@256 at 640 x 640 peaks
at 4,120 MiB with the pool and 2,179 MiB on the system allocator (`python bench/memory.py`). For
training the pool pays off: the embedded default's step was ~5% faster with it and peaked ~12%
lower (same script, `--train`; two rounds at load ~5.6, so a rough figure). So processes that
only run a trained model (evaluation, export, drawing) switch to the system allocator, and
training keeps TensorFlow's default.
"""

import os

ENV = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def use_system_allocator() -> None:
  """Puts oneDNN's tensors on the system allocator in this process; a value the user set wins.

  Call it before TensorFlow is imported: TensorFlow reads the variable when it creates its
  CPU allocator.
  """
  os.environ.setdefault(ENV, "1")
