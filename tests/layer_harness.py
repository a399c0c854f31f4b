"""One test harness for every layer (style practice 10).

`check_layer` builds a layer from kwargs, checks its config round-trips against
those kwargs, runs it symbolically and eagerly (shapes agree with
compute_output_shape), rebuilds it from config with the same weights and gets
identical outputs, and runs it under the mixed_float16 policy.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np


def _map(fn: Callable, tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _map(fn, v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_map(fn, v) for v in tree)
  return fn(tree)


def _leaves(tree: Any) -> list:
  if isinstance(tree, dict):
    return [x for k in sorted(tree) for x in _leaves(tree[k])]
  if isinstance(tree, (list, tuple)):
    return [x for v in tree for x in _leaves(v)]
  return [tree]


def check_layer(cls: type, kwargs: dict, inputs: Any, expected_config: dict | None = None,
                atol: float = 1e-5) -> keras.layers.Layer:
  """Runs the shared layer checks; returns the built layer.

  Args:
    cls: the layer class.
    kwargs: constructor arguments; each must come back from get_config unchanged
      (or as in `expected_config` for keys that are normalised, e.g. a spec name).
    inputs: numpy inputs (array, dict or list of arrays).
  """
  layer = cls(**kwargs)
  config = layer.get_config()
  for key, value in kwargs.items():
    want = (expected_config or {}).get(key, value)
    assert config[key] == want, f"get_config()[{key!r}] = {config[key]!r}, expected {want!r}"

  symbolic_in = _map(lambda a: keras.Input(shape=a.shape[1:], batch_size=a.shape[0]), inputs)
  symbolic_out = layer(symbolic_in)
  eager_out = layer(inputs)
  for s, e in zip(_leaves(symbolic_out), _leaves(eager_out)):
    assert tuple(s.shape) == tuple(e.shape)
  shapes = _map(lambda a: tuple(a.shape), inputs)
  computed = layer.compute_output_shape(shapes)
  for c, e in zip(_leaves(computed) if isinstance(computed, (dict, list))
                  else [computed], _leaves(eager_out)):
    if isinstance(c, tuple):
      assert tuple(c) == tuple(e.shape), f"compute_output_shape {c} vs actual {e.shape}"

  clone = cls.from_config(config)
  clone(inputs)
  clone.set_weights(layer.get_weights())
  for a, b in zip(_leaves(eager_out), _leaves(clone(inputs))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)

  mixed = cls(**kwargs, dtype="mixed_float16")
  mixed_out = mixed(inputs)
  for x in _leaves(mixed_out):
    assert keras.backend.standardize_dtype(x.dtype) == "float16"
    assert np.isfinite(np.asarray(x, np.float32)).all()
  return layer
