"""The one key convention for pyramid levels: "P3".."P7", as keras-hub names them.

Feature dicts (backbone outputs, decoder outputs, head outputs) and every dict of sublayers
kept per level are keyed by these strings. Integer levels stay what loops and architecture
specs count with. String keys matter beyond style: TensorFlow's object tracking (SavedModel
export, `tf.train.Checkpoint`) refuses a dict of layers with a non-string key.
"""

from __future__ import annotations


def level_key(level: int) -> str:
  """3 -> "P3"."""
  return f"P{int(level)}"


def key_level(key: str) -> int:
  """"P3" -> 3."""
  if not (isinstance(key, str) and key[:1] == "P" and key[1:].isdigit()):
    raise ValueError(f"'{key}' is not a pyramid level key like 'P3'")
  return int(key[1:])
