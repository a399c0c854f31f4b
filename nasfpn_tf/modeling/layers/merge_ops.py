"""The two binary ops of the NAS-FPN search space, on already-resampled tensors."""

from __future__ import annotations

from keras import ops


def sum_merge(a, b):
  """Element-wise sum."""
  return a + b


def global_pool_merge(a, b, pool_type: str = "max"):
  """Global pooling ("attention"): `a + b * sigmoid(global_pool(a))`.

  `a` should be the input that came from the coarser level: its global context
  gates the finer, more detailed map `b` channel by channel. Pooling is over H
  and W; "max" is the TF reference, "avg" what mmdetection uses.
  """
  if pool_type == "max":
    pooled = ops.max(a, axis=(1, 2), keepdims=True)
  elif pool_type == "avg":
    pooled = ops.mean(a, axis=(1, 2), keepdims=True)
  else:
    raise ValueError(f"pool_type '{pool_type}' is not 'max' or 'avg'")
  return a + b * ops.sigmoid(pooled)


def merge(op: str, a, b, a_level: int, b_level: int, pool_type: str = "max"):
  """Applies `op` ("sum" or "global_pool") to inputs that came from `a_level`, `b_level`.

  For global pooling the coarser original level is the gate (ties: the first input).
  """
  if op == "sum":
    return sum_merge(a, b)
  if op == "global_pool":
    return global_pool_merge(a, b, pool_type) if a_level >= b_level else \
        global_pool_merge(b, a, pool_type)
  raise ValueError(f"op '{op}' is not 'sum' or 'global_pool'")
