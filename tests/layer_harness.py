"""One test harness for every layer (style practice 10).

`check_layer` builds a layer from kwargs and checks, in order:
  1. get_config returns every constructor kwarg unchanged (or as `expected_config`
     says, for normalised values such as a spec name) and is JSON-serialisable;
  2. `build()` on the input shapes alone creates the weights a call would;
  3. symbolic and eager calls agree on shapes, and with compute_output_shape;
  4. `from_config` + `set_weights` reproduces the outputs exactly;
  5. a one-step `fit` runs and moves the weights (layers with trainable weights);
  6. under the mixed_float16 policy outputs are float16 and finite, variables float32.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import keras
import numpy as np
from keras import ops


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


def _shape_leaves(tree: Any) -> list:
  """Leaves of a compute_output_shape result (a shape tuple is a leaf)."""
  if isinstance(tree, dict):
    return [x for k in sorted(tree) for x in _shape_leaves(tree[k])]
  if isinstance(tree, list) or (isinstance(tree, tuple) and tree and
                                isinstance(tree[0], (tuple, list))):
    return [x for v in tree for x in _shape_leaves(v)]
  return [tuple(tree)]


def _symbolic(inputs: Any) -> Any:
  if isinstance(inputs, dict):  # named like their keys, as functional models want
    return {k: keras.Input(shape=a.shape[1:], batch_size=a.shape[0], name=k)
            for k, a in inputs.items()}
  return _map(lambda a: keras.Input(shape=a.shape[1:], batch_size=a.shape[0]), inputs)


def _one_step_fit(layer: keras.layers.Layer, inputs: Any) -> None:
  """Wraps `layer` in a functional model and takes one SGD step on mean(output**2)."""
  symbolic = _symbolic(inputs)
  outs = _leaves(layer(symbolic))
  per_sample = sum(ops.mean(ops.square(ops.cast(o, "float32")), axis=tuple(range(1, len(o.shape))))
                   for o in outs)
  model = keras.Model(symbolic, per_sample)
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y_true, y_pred: ops.mean(y_pred))
  before = [np.array(w) for w in layer.trainable_weights]
  batch = _leaves(inputs)[0].shape[0]
  history = model.fit(inputs, np.zeros((batch,), np.float32), batch_size=batch, epochs=1,
                      verbose=0)
  assert np.isfinite(history.history["loss"][0])
  after = [np.array(w) for w in layer.trainable_weights]
  assert any(not np.array_equal(b, a) for b, a in zip(before, after)), "fit moved no weight"


def check_layer(cls: type, kwargs: dict, inputs: Any, expected_config: dict | None = None,
                atol: float = 1e-5, fit: bool = True) -> keras.layers.Layer:
  """Runs the shared layer checks; returns the built (and called) layer.

  Args:
    cls: the layer class.
    kwargs: constructor arguments; each must come back from get_config unchanged
      (or as in `expected_config` for keys that are normalised, e.g. a spec name).
    inputs: numpy inputs (array, dict or list of arrays), batch first.
    expected_config: get_config values for normalised kwargs.
    atol: tolerance for the from_config + set_weights comparison.
    fit: run the one-step fit check (skipped anyway when there are no trainable weights).
  """
  layer = cls(**kwargs)
  assert not layer.weights, "__init__ must create no weights"
  config = layer.get_config()
  for key, value in kwargs.items():
    want = (expected_config or {}).get(key, value)
    assert config[key] == want, f"get_config()[{key!r}] = {config[key]!r}, expected {want!r}"
  json.dumps(config)  # plain data only

  shapes = _map(lambda a: tuple(a.shape), inputs)
  built = cls(**kwargs)
  built.build(shapes)
  assert built.built

  symbolic_out = layer(_symbolic(inputs))
  eager_out = layer(inputs)
  assert len(layer.weights) == len(built.weights)
  assert [tuple(w.shape) for w in layer.weights] == [tuple(w.shape) for w in built.weights]
  for s, e in zip(_leaves(symbolic_out), _leaves(eager_out), strict=True):
    assert tuple(s.shape) == tuple(e.shape)
  computed = _shape_leaves(layer.compute_output_shape(shapes))
  actual = [tuple(e.shape) for e in _leaves(eager_out)]
  assert computed == actual, f"compute_output_shape {computed} vs actual {actual}"

  clone = cls.from_config(config)
  clone(inputs)
  clone.set_weights(layer.get_weights())
  for a, b in zip(_leaves(eager_out), _leaves(clone(inputs)), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)

  if fit and layer.trainable_weights:
    _one_step_fit(cls.from_config(config), inputs)

  mixed = cls(**kwargs, dtype="mixed_float16")
  mixed_out = mixed(inputs)
  for x in _leaves(mixed_out):
    assert keras.backend.standardize_dtype(x.dtype) == "float16"
    assert np.isfinite(np.asarray(x, np.float32)).all()
  for w in mixed.weights:
    assert keras.backend.standardize_dtype(w.dtype) == "float32", w.path
  return layer
