"""The two binary ops of the NAS-FPN search space, on already-resampled tensors.

* sum: `a + b`.
* global pooling ("attention"): `a + b * sigmoid(global_pool(a))`, where `a` is
  the input that came from the coarser level: its per-channel global context
  gates the finer, more detailed map `b`. Pooling is over H and W; "max" is the
  TF reference (Model Garden, tensorflow/tpu), "avg" what mmdetection uses.
"""

from __future__ import annotations

from keras import ops

MERGE_OPS = ("sum", "global_pool")
POOL_TYPES = ("max", "avg")


def sum_merge(a, b):
  """Element-wise sum."""
  return a + b


def global_pool_merge(a, b, pool_type: str = "max"):
  """Global pooling merge: `a + b * sigmoid(pool_{H,W}(a))`, `a` being the gate.

  Args:
    a: [B, H, W, C], the input from the coarser original level.
    b: [B, H, W, C], the other input.
    pool_type: "max" (default, TF reference) or "avg" (mmdetection).

  Returns:
    [B, H, W, C].
  """
  if pool_type == "max":
    pooled = ops.max(a, axis=(1, 2), keepdims=True)
  elif pool_type == "avg":
    pooled = ops.mean(a, axis=(1, 2), keepdims=True)
  else:
    raise ValueError(f"pool_type '{pool_type}' is not one of {list(POOL_TYPES)}")
  return a + b * ops.sigmoid(pooled)


def merge(op: str, a, b, a_level: int, b_level: int, pool_type: str = "max"):
  """Applies `op` ("sum" or "global_pool") to inputs that came from `a_level`, `b_level`.

  For global pooling the input from the coarser original level is the gate; on a tie
  the first input is (Model Garden: `node0_level >= node1_level`).
  """
  if op == "sum":
    return sum_merge(a, b)
  if op == "global_pool":
    if a_level >= b_level:
      return global_pool_merge(a, b, pool_type)
    return global_pool_merge(b, a, pool_type)
  raise ValueError(f"op '{op}' is not one of {list(MERGE_OPS)}")
