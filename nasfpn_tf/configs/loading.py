"""YAML in, typed config out: strict keys, one level of `base:` inheritance, overrides.

`--params_override` takes, as in Model Garden, comma-separated `dotted.key=value`
pairs (values parsed as YAML, so `task.model.input_size=[256,256]` works) or the
path of a YAML file of overrides. Unknown keys and bad values fail here, at load
time, with the dotted key in the message.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from typing import Any, Mapping, Optional

import yaml

from nasfpn_tf.configs.experiment import ConfigError, ExperimentConfig

_T = typing.TypeVar("_T")


def _field_types(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
  """Checks `value` against the annotation `tp` (int/float/bool/str/list/Optional/Any)."""
  origin = typing.get_origin(tp)
  if tp is Any:
    return value
  if origin is typing.Union:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
      return None
    return _coerce(value, args[0], key)
  if dataclasses.is_dataclass(tp):
    return from_dict(tp, value, key)
  if tp is bool:
    if not isinstance(value, bool):
      raise ConfigError(key, f"expected true/false, got {value!r}")
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(key, f"expected an integer, got {value!r}")
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(key, f"expected a number, got {value!r}")
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(key, f"expected a string, got {value!r}")
    return value
  if tp is list or origin is list:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(key, f"expected a list, got {value!r}")
    return list(value)
  return value


def from_dict(cls: type[_T], data: Optional[Mapping[str, Any]], prefix: str = "") -> _T:
  """Builds dataclass `cls` from a nested mapping; unknown keys raise with their dotted name."""
  if data is None:
    data = {}
  if dataclasses.is_dataclass(data):
    data = dataclasses.asdict(data)
  if not isinstance(data, Mapping):
    raise ConfigError(prefix or "<root>", f"expected a mapping, got {data!r}")
  types = _field_types(cls)
  known = {f.name for f in dataclasses.fields(cls)}
  kwargs = {}
  for key, value in data.items():
    dotted = f"{prefix}.{key}" if prefix else str(key)
    if key not in known:
      raise ConfigError(dotted, f"unknown key (known keys here: {sorted(known)})")
    kwargs[key] = _coerce(value, types[key], dotted)
  try:
    return cls(**kwargs)
  except ConfigError as e:
    raise e.prefixed(prefix) from None


def to_dict(config: Any) -> dict[str, Any]:
  return dataclasses.asdict(config)


def _deep_merge(base: dict, update: Mapping) -> dict:
  out = copy.deepcopy(base)
  for k, v in update.items():
    if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
      out[k] = _deep_merge(out[k], v)
    else:
      out[k] = copy.deepcopy(v)
  return out


def read_yaml(path: str) -> dict[str, Any]:
  """Reads a YAML experiment file, resolving at most one level of `base:`."""
  data = _read_mapping(path)
  base = data.pop("base", None)
  if base:
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    base_data = _read_mapping(base_path)
    if "base" in base_data:
      raise ConfigError("base", f"{base_path} has its own 'base:'; only one level of "
                        "inheritance is allowed")
    data = _deep_merge(base_data, data)
  return data


def _read_text(path: str) -> str:
  if "://" in path:   # a bucket (gs://...): MODEL_DIR/config.yaml of a run there
    from nasfpn_tf import file_io  # local: file_io imports TensorFlow
    import tensorflow as tf
    try:
      return file_io.read_text(path)
    except tf.errors.OpError as e:
      raise OSError(0, e.message or type(e).__name__) from None
  with open(path) as f:
    return f.read()


def _read_mapping(path: str) -> dict[str, Any]:
  try:
    data = yaml.safe_load(_read_text(path))
  except OSError as e:
    raise ConfigError("config_file", f"cannot read {path}: {e.strerror}") from None
  except yaml.YAMLError as e:
    raise ConfigError("config_file", f"{path} is not valid YAML: {e}") from None
  if data is None:
    return {}
  if not isinstance(data, dict):
    raise ConfigError("config_file", f"{path} must hold a mapping at the top level")
  return data


def _split_top_level(text: str) -> list[str]:
  """Splits on commas that are not inside brackets or quotes."""
  parts, depth, quote, cur = [], 0, None, []
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "[{(":
      depth += 1
    elif ch in "]})":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append("".join(cur))
      cur = []
      continue
    cur.append(ch)
  parts.append("".join(cur))
  return [p.strip() for p in parts if p.strip()]


def parse_override(text: str) -> dict[str, Any]:
  """`a.b=1,c=[1,2]`, a YAML file path, or a YAML mapping string -> nested dict."""
  text = text.strip()
  if not text:
    return {}
  if text.endswith((".yaml", ".yml")) and os.path.exists(text):
    return _read_mapping(text)
  if "=" not in text:
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
      raise ConfigError("params_override", f"'{text}' is neither key=value pairs, a YAML "
                        "mapping nor an existing .yaml file")
    return loaded
  nested: dict[str, Any] = {}
  for pair in _split_top_level(text):
    if "=" not in pair:
      raise ConfigError("params_override", f"'{pair}' is not dotted.key=value")
    key, raw = pair.split("=", 1)
    try:
      value = yaml.safe_load(raw)
    except yaml.YAMLError:
      raise ConfigError(key.strip(), f"value '{raw}' is not valid YAML") from None
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return nested


def load_config(config_file: str = "", params_override: str | list[str] = "",
                cls: type[_T] = ExperimentConfig) -> _T:
  """Defaults <- YAML file (with its base) <- overrides, validated into `cls`."""
  data = to_dict(cls())
  if config_file:
    data = _deep_merge(data, read_yaml(config_file))
  overrides = [params_override] if isinstance(params_override, str) else params_override
  for text in overrides:
    data = _deep_merge(data, parse_override(text))
  # Build from the user-supplied parts too, so unknown keys are caught with their path.
  return from_dict(cls, data)


def override(config: _T, params: str | Mapping[str, Any]) -> _T:
  """Returns a copy of `config` with overrides applied (the original is left as it was)."""
  update = parse_override(params) if isinstance(params, str) else params
  return from_dict(type(config), _deep_merge(to_dict(config), update))


def save_yaml(config: Any, path: str) -> None:
  """Writes `config` atomically (temp file, then rename), on any filesystem."""
  from nasfpn_tf import file_io  # local: file_io imports TensorFlow, config loading does not
  file_io.write_yaml(path, to_dict(config))
