"""Feature-pyramid architectures as data: a list of merging cells.

One format serves the decoder, the config files, the drawings and the search
controller (NAS-FPN paper, section 3). The pool of feature maps starts with the
pyramid's input levels (index 0 = `min_level`, ..., index L-1 = `max_level`);
each cell appends its output, so cell `k` creates pool index `L + k`.

Three spellings of the same thing:

* records: `[{"level": 4, "op": "global_pool", "inputs": [1, 3], "is_output": False}, ...]`
  (what YAML/JSON configs hold);
* a compact string: `"P4:gp:1,3 P4:sum:1,5 P3:sum:0,6:out ..."` (`gp` or
  `global_pool`, `sum`; `:out` marks an output cell);
* `ArchitectureSpec` objects (what code passes around).

Example:
    spec = parse_spec("nasfpn")            # a shipped name
    spec = parse_spec("P4:sum:0,1:out ...")  # or a compact string
    print(spec.to_string()); yaml.safe_dump(spec.to_records())
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping, Sequence, Union

import yaml

OPS = ("sum", "global_pool")
_OP_ALIASES = {"sum": "sum", "global_pool": "global_pool", "gp": "global_pool",
               "global_pooling": "global_pool", "attention": "global_pool"}
_SHORT_OP = {"sum": "sum", "global_pool": "gp"}


class SpecError(ValueError):
  """An architecture spec that cannot be built; the message names the cell and field."""


@dataclasses.dataclass(frozen=True)
class CellSpec:
  """One merging cell: merge pool entries `inputs` with `op`, output at `level`."""
  level: int
  op: str
  inputs: tuple[int, int]
  is_output: bool = False

  def to_record(self) -> dict[str, Any]:
    return {"level": self.level, "op": self.op, "inputs": list(self.inputs),
            "is_output": self.is_output}


@dataclasses.dataclass(frozen=True)
class ArchitectureSpec:
  """An ordered list of merging cells over the levels `min_level..max_level`.

  Construction validates; an invalid spec raises `SpecError`.
  """
  cells: tuple[CellSpec, ...]
  min_level: int = 3
  max_level: int = 7

  def __post_init__(self):
    # Inputs given as a list (e.g. straight from JSON) become a tuple, so that equal
    # specs compare equal and stay hashable.
    cells = tuple(dataclasses.replace(c, inputs=tuple(c.inputs))
                  if isinstance(c, CellSpec) and isinstance(c.inputs, list) else c
                  for c in self.cells)
    object.__setattr__(self, "cells", cells)
    validate(self)

  @property
  def num_inputs(self) -> int:
    return self.max_level - self.min_level + 1

  def pool_levels(self) -> list[int]:
    """Level of every pool entry: the inputs, then one per cell."""
    return list(range(self.min_level, self.max_level + 1)) + [c.level for c in self.cells]

  def output_cells(self) -> dict[int, int]:
    """Maps each output level to the index (into `cells`) of the cell producing it."""
    return {c.level: k for k, c in enumerate(self.cells) if c.is_output}

  def to_records(self) -> list[dict[str, Any]]:
    return [c.to_record() for c in self.cells]

  def to_string(self) -> str:
    parts = []
    for c in self.cells:
      s = f"P{c.level}:{_SHORT_OP[c.op]}:{c.inputs[0]},{c.inputs[1]}"
      parts.append(s + (":out" if c.is_output else ""))
    return " ".join(parts)

  def to_yaml(self) -> str:
    return yaml.safe_dump({"min_level": self.min_level, "max_level": self.max_level,
                           "cells": self.to_records()}, sort_keys=False)

  def with_levels(self, min_level: int, max_level: int) -> "ArchitectureSpec":
    return ArchitectureSpec(self.cells, min_level, max_level)


def validate(spec: ArchitectureSpec) -> None:
  """Raises `SpecError` naming the first bad cell and field."""
  for name, value in (("min_level", spec.min_level), ("max_level", spec.max_level)):
    if not isinstance(value, int) or isinstance(value, bool):
      raise SpecError(f"{name} {value!r} is not an integer")
  if spec.min_level < 1 or spec.max_level < spec.min_level:
    raise SpecError(f"min_level={spec.min_level}, max_level={spec.max_level}: need "
                    "1 <= min_level <= max_level")
  if not spec.cells:
    raise SpecError("spec has no cells")
  num_inputs = spec.num_inputs
  seen_outputs: dict[int, int] = {}
  for k, cell in enumerate(spec.cells):
    if not isinstance(cell, CellSpec):
      raise SpecError(f"cell {k}: expected CellSpec, got {type(cell).__name__}")
    if cell.op not in OPS:
      raise SpecError(f"cell {k}: op '{cell.op}' is not one of {list(OPS)}")
    if isinstance(cell.level, bool) or not isinstance(cell.level, int):
      raise SpecError(f"cell {k}: level {cell.level!r} is not an integer")
    if not spec.min_level <= cell.level <= spec.max_level:
      raise SpecError(f"cell {k}: level {cell.level} outside {spec.min_level}..{spec.max_level}")
    if not isinstance(cell.inputs, (tuple, list)) or len(cell.inputs) != 2:
      raise SpecError(f"cell {k}: inputs must be two pool indices, got {cell.inputs!r}")
    if not isinstance(cell.is_output, bool):
      raise SpecError(f"cell {k}: is_output must be true or false, got {cell.is_output!r}")
    pool_size = num_inputs + k
    for which, idx in zip(("first", "second"), cell.inputs):
      if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
        raise SpecError(f"cell {k}: {which} input {idx!r} is not a non-negative integer")
      if idx >= pool_size:
        raise SpecError(f"cell {k}: {which} input index {idx} but only {pool_size} "
                        f"feature maps exist (indices 0..{pool_size - 1})")
    if cell.is_output:
      if cell.level in seen_outputs:
        raise SpecError(f"cell {k}: level P{cell.level} already output by cell "
                        f"{seen_outputs[cell.level]}")
      seen_outputs[cell.level] = k
  missing = [lvl for lvl in range(spec.min_level, spec.max_level + 1) if lvl not in seen_outputs]
  if missing:
    raise SpecError(f"no output cell for level(s) {', '.join(f'P{m}' for m in missing)}")


def cell_input_plan(spec: ArchitectureSpec) -> list[list[int]]:
  """Pool indices each cell merges: its two inputs, then, for an output cell, every
  earlier pool entry of the same level that no cell has consumed so far.

  That is the paper's output rule (Model Garden applies it the same way, counting
  consumers in build order): in the published cell it keeps the P5 and P7 inputs,
  which no cell reads, by summing them into the P5 and P7 output cells.
  """
  levels = spec.pool_levels()
  consumed = [0] * len(levels)
  plan = []
  for k, cell in enumerate(spec.cells):
    indices = list(cell.inputs)
    for i in indices:
      consumed[i] += 1
    if cell.is_output:
      for j in range(spec.num_inputs + k):
        if consumed[j] == 0 and levels[j] == cell.level:
          indices.append(j)
          consumed[j] += 1
    plan.append(indices)
  return plan


def _cell_from_record(k: int, rec: Any) -> CellSpec:
  if isinstance(rec, CellSpec):
    return rec
  if isinstance(rec, Mapping):
    unknown = set(rec) - {"level", "op", "inputs", "is_output"}
    if unknown:
      raise SpecError(f"cell {k}: unknown field(s) {sorted(unknown)}")
    for key in ("level", "op", "inputs"):
      if key not in rec:
        raise SpecError(f"cell {k}: missing field '{key}'")
    level, op, inputs, is_output = rec["level"], rec["op"], rec["inputs"], rec.get("is_output", False)
  elif isinstance(rec, (list, tuple)) and len(rec) == 4:
    level, op, inputs, is_output = rec
  else:
    raise SpecError(f"cell {k}: expected a mapping or [level, op, inputs, is_output], got {rec!r}")
  if isinstance(level, str) and level.upper().startswith("P"):
    level = level[1:]
  if isinstance(level, bool) or (isinstance(level, float) and not level.is_integer()):
    raise SpecError(f"cell {k}: level {level!r} is not an integer")
  try:
    level = int(level)
  except (TypeError, ValueError):
    raise SpecError(f"cell {k}: level {level!r} is not an integer") from None
  if str(op) not in _OP_ALIASES:
    raise SpecError(f"cell {k}: op '{op}' is not one of {list(OPS)}")
  if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
    raise SpecError(f"cell {k}: inputs must be two pool indices, got {inputs!r}")
  if not isinstance(is_output, bool):
    raise SpecError(f"cell {k}: is_output must be true or false, got {is_output!r}")
  return CellSpec(level=level, op=_OP_ALIASES[str(op)], inputs=tuple(inputs), is_output=is_output)


def from_records(records: Iterable[Any], min_level: int = 3, max_level: int = 7) -> ArchitectureSpec:
  """Builds a spec from a list of cell records (mappings or 4-tuples)."""
  if isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
    raise SpecError(f"cells must be a list, got {type(records).__name__}")
  cells = tuple(_cell_from_record(k, r) for k, r in enumerate(records))
  return ArchitectureSpec(cells, min_level, max_level)


def from_string(text: str, min_level: int = 3, max_level: int = 7) -> ArchitectureSpec:
  """Parses the compact form, e.g. `"P4:gp:1,3 P4:sum:1,5 P3:sum:0,6:out"`."""
  cells = []
  for k, token in enumerate(text.replace(";", " ").split()):
    fields = token.split(":")
    if len(fields) not in (3, 4) or (len(fields) == 4 and fields[3] != "out"):
      raise SpecError(f"cell {k}: '{token}' is not LEVEL:OP:IN1,IN2[:out]")
    try:
      inputs = [int(i) for i in fields[2].split(",")]
    except ValueError:
      raise SpecError(f"cell {k}: inputs '{fields[2]}' are not two integers") from None
    cells.append(_cell_from_record(k, [fields[0], fields[1], inputs, len(fields) == 4]))
  return ArchitectureSpec(tuple(cells), min_level, max_level)


# YAML text (not a compact string) starts with one of the mapping keys.
_YAML_KEYS = ("cells:", "min_level:", "max_level:")

SpecLike = Union[str, ArchitectureSpec, Sequence[Any], Mapping[str, Any]]


def parse_spec(value: SpecLike, min_level: int = 3, max_level: int = 7) -> ArchitectureSpec:
  """Accepts a shipped name, a compact string, a YAML/JSON file path or text,
  a list of records, a `{"cells": [...], "min_level":..}` mapping, or a spec.

  The levels of the result are `min_level..max_level` unless a mapping says otherwise.
  """
  from nasfpn_tf import named_specs  # local: named_specs imports this module

  if isinstance(value, ArchitectureSpec):
    return value.with_levels(min_level, max_level)
  if isinstance(value, Mapping):
    unknown = set(value) - {"cells", "min_level", "max_level"}
    if unknown:
      raise SpecError(f"unknown spec key(s) {sorted(unknown)}")
    if "cells" not in value:
      raise SpecError("spec mapping needs a 'cells' list")
    return from_records(value["cells"], value.get("min_level", min_level),
                        value.get("max_level", max_level))
  if isinstance(value, str):
    text = value.strip()
    if text in named_specs.NAMED_SPECS:
      return from_records(named_specs.NAMED_SPECS[text], min_level, max_level)
    if text.endswith((".yaml", ".yml", ".json")):
      try:
        with open(text) as f:
          loaded = yaml.safe_load(f)
      except OSError as e:
        raise SpecError(f"cannot read spec file {text}: {e}") from None
      except yaml.YAMLError as e:
        raise SpecError(f"spec file {text} is not valid YAML/JSON: {e}") from None
      try:
        return parse_spec(loaded, min_level, max_level)
      except SpecError as e:
        raise SpecError(f"{text}: {e}") from None
    if text.startswith(("[", "{", "-")) or text.startswith(_YAML_KEYS):
      try:
        loaded = json.loads(text)
      except json.JSONDecodeError:
        try:
          loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
          raise SpecError(f"spec text is not valid JSON/YAML: {e}") from None
      return parse_spec(loaded, min_level, max_level)
    if ":" in text:
      return from_string(text, min_level, max_level)
    raise SpecError(f"'{text}' is not a known spec name ({sorted(named_specs.NAMED_SPECS)}), "
                    "a compact spec string or a .yaml/.json file")
  return from_records(value, min_level, max_level)


def spec_label(value: SpecLike, min_level: int = 3, max_level: int = 7) -> str:
  """A short human name for a spec, for titles and reports: the shipped name ("nasfpn",
  "fpn", "panet"), the file name of a spec file, or "custom" (with the shipped name it
  equals, if any: a compact string of the published cell is still the published cell).

  Raises SpecError as `parse_spec` does.
  """
  from nasfpn_tf import named_specs  # local: named_specs imports this module

  if isinstance(value, str):
    text = value.strip()
    if text in named_specs.NAMED_SPECS:
      return text
    if text.endswith((".yaml", ".yml", ".json")):
      return text.replace("\\", "/").rsplit("/", 1)[-1]
  cells = parse_spec(value, min_level, max_level).cells
  for name, records in named_specs.NAMED_SPECS.items():
    try:
      shipped = from_records(records, min_level, max_level).cells
    except SpecError:  # shipped specs are written for P3-P7; other level ranges differ
      continue
    if shipped == cells:
      return f"custom (= {name})"
  return "custom"
