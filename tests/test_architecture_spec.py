import dataclasses
import json

import pytest
import yaml

from nasfpn_tf.architecture_spec import (ArchitectureSpec, CellSpec, SpecError, cell_input_plan,
                                         from_records, from_string, parse_spec)
from nasfpn_tf.named_specs import NAMED_SPECS

PUBLISHED = [(4, "global_pool", (1, 3), False), (4, "sum", (1, 5), False),
             (3, "sum", (0, 6), True), (4, "sum", (6, 7), True),
             (5, "global_pool", (7, 8), True), (7, "global_pool", (6, 9), True),
             (6, "global_pool", (9, 10), True)]
# Five output cells, one per level: the smallest valid spec over P3..P7.
FIVE = "P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,3:out P6:sum:3,4:out P7:sum:4,3:out"


def test_published_cell_matches_the_reference_table():
  spec = parse_spec("nasfpn")
  assert [(c.level, c.op, c.inputs, c.is_output) for c in spec.cells] == PUBLISHED
  assert spec.output_cells() == {3: 2, 4: 3, 5: 4, 7: 5, 6: 6}
  assert spec.to_string() == ("P4:gp:1,3 P4:sum:1,5 P3:sum:0,6:out P4:sum:6,7:out "
                              "P5:gp:7,8:out P7:gp:6,9:out P6:gp:9,10:out")
  assert spec.pool_levels() == [3, 4, 5, 6, 7, 4, 4, 3, 4, 5, 7, 6]


def test_output_rule_plan():
  # Published cell: the P5 output (cell 4) absorbs the unconsumed P5 input (index 2),
  # the P7 output (cell 5) the unconsumed P7 input (index 4).
  assert cell_input_plan(parse_spec("nasfpn")) == [
      [1, 3], [1, 5], [0, 6], [6, 7], [7, 8, 2], [6, 9, 4], [9, 10]]
  # An intermediate cell nobody reads is absorbed by a later output cell of its level.
  spec = parse_spec("P5:sum:2,3 P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,4:out "
                    "P6:sum:3,4:out P7:sum:4,3:out")
  assert cell_input_plan(spec)[3] == [2, 4, 5]
  # Non-output cells never absorb anything.
  assert all(len(p) == 2 for p, c in zip(cell_input_plan(spec), spec.cells) if not c.is_output)


@pytest.mark.parametrize("name", sorted(NAMED_SPECS))
def test_every_spelling_round_trips(name, tmp_path):
  spec = parse_spec(name)
  assert from_string(spec.to_string()) == spec
  assert from_records(spec.to_records()) == spec
  assert parse_spec(json.dumps(spec.to_records())) == spec
  assert parse_spec(spec.to_yaml()) == spec  # YAML text
  assert parse_spec(spec) == spec
  for suffix, text in ((".yaml", spec.to_yaml()),
                       (".json", json.dumps({"cells": spec.to_records()}))):
    path = tmp_path / f"{name}{suffix}"
    path.write_text(text)
    assert parse_spec(str(path)) == spec
  assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_compact_string_aliases_and_tuples():
  spec = parse_spec("P6:sum:4,3:out P5:global_pool:5,2:out P4:sum:6,1:out P3:gp:7,0:out "
                    "P7:attention:4,5:out")
  assert [c.op for c in spec.cells] == ["sum", "global_pool", "sum", "global_pool",
                                        "global_pool"]
  assert parse_spec([[6, "sum", [4, 3], True]] + [list(c.to_record().values())
                                                   for c in spec.cells[1:]]) == \
      ArchitectureSpec((CellSpec(6, "sum", (4, 3), True),) + spec.cells[1:])
  # "P4" and 4 are the same level; ";" separates cells too; list inputs become tuples.
  assert parse_spec(FIVE.replace(" ", ";")) == parse_spec(FIVE)
  assert from_records([{"level": "P3", "op": "sum", "inputs": [0, 1], "is_output": True}] +
                      parse_spec(FIVE).to_records()[1:]) == parse_spec(FIVE)
  assert ArchitectureSpec([CellSpec(c.level, c.op, list(c.inputs), c.is_output)
                           for c in parse_spec(FIVE).cells]) == parse_spec(FIVE)


def test_levels_follow_the_caller_unless_a_mapping_says_otherwise():
  spec = parse_spec("P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,0:out", min_level=3, max_level=5)
  assert spec.num_inputs == 3 and spec.pool_levels() == [3, 4, 5, 3, 4, 5]
  mapped = parse_spec({"cells": spec.to_records(), "min_level": 3, "max_level": 5})
  assert (mapped.min_level, mapped.max_level) == (3, 5)
  assert parse_spec(spec, 3, 5) == spec


# Every SpecError the module raises, with the culprit named in the message.
@pytest.mark.parametrize("value, message", [
    # validate(): cells
    ("P4:sum:1,11:out", "cell 0: second input index 11 but only 5 feature maps exist"),
    ("P3:sum:0,1 P4:sum:0,6", "cell 1: second input index 6 but only 6 feature maps exist"),
    ("P9:sum:0,1", "cell 0: level 9 outside 3..7"),
    (FIVE.replace("P7:sum:4,3:out", "P6:sum:4,3:out"), "cell 4: level P6 already output by cell 3"),
    (FIVE.replace(" P7:sum:4,3:out", ""), "no output cell for level(s) P7"),
    ("P3:sum:0,1", "no output cell for level(s) P3, P4, P5, P6, P7"),
    # compact string
    ("P4:sum:0", "cell 0: inputs must be two pool indices, got [0]"),
    ("P4:sum:a,b", "cell 0: inputs 'a,b' are not two integers"),
    ("P4:sum:0,1:x", "cell 0: 'P4:sum:0,1:x' is not LEVEL:OP:IN1,IN2[:out]"),
    ("P4:sum", "cell 0: 'P4:sum' is not LEVEL:OP:IN1,IN2[:out]"),
    ("Px:sum:0,1", "cell 0: level 'x' is not an integer"),
    ("P4:mul:0,1", "cell 0: op 'mul' is not one of ['sum', 'global_pool']"),
    # records
    ([{"level": 3, "op": "sum"}], "cell 0: missing field 'inputs'"),
    ([{"op": "sum", "inputs": [0, 1]}], "cell 0: missing field 'level'"),
    ([{"level": 3, "inputs": [0, 1]}], "cell 0: missing field 'op'"),
    ([{"level": 3, "op": "sum", "inputs": [0, 1], "colour": 1}],
     "cell 0: unknown field(s) ['colour']"),
    ([{"level": 3, "op": "sum", "inputs": [0, 1], "is_output": "yes"}],
     "cell 0: is_output must be true or false, got 'yes'"),
    ([[3, "sum", [-1, 1], True]], "cell 0: first input -1 is not a non-negative integer"),
    ([[3, "sum", [0, 1.5], True]], "cell 0: second input 1.5 is not a non-negative integer"),
    ([[3, "sum", [0, True], True]], "cell 0: second input True is not a non-negative integer"),
    ([[3, "sum", [0, 1], True], [4.5, "sum", [0, 1], True]], "cell 1: level 4.5 is not an integer"),
    ([[True, "sum", [0, 1], True]], "cell 0: level True is not an integer"),
    ([[3, "sum", 7, True]], "cell 0: inputs must be two pool indices, got 7"),
    ([[3, "sum", [0, 1, 2], True]], "cell 0: inputs must be two pool indices, got [0, 1, 2]"),
    ([[3, "sum", [0, 1]]], "cell 0: expected a mapping or [level, op, inputs, is_output]"),
    (["P3:sum:0,1:out"], "cell 0: expected a mapping or [level, op, inputs, is_output]"),
    ([[3, "mul", [0, 1], True]], "cell 0: op 'mul' is not one of"),
    ([], "spec has no cells"),
    # mappings and text
    ({"cells": FIVE.split(), "colour": 1}, "unknown spec key(s) ['colour']"),
    ({"min_level": 3}, "spec mapping needs a 'cells' list"),
    ({"cells": 3}, "cells must be a list, got int"),
    ({"cells": "P3:sum:0,1:out"}, "cells must be a list, got str"),
    ({"cells": [[3, "sum", [0, 1], True]], "min_level": "3"}, "min_level '3' is not an integer"),
    ({"cells": [[3, "sum", [0, 1], True]], "max_level": 7.0}, "max_level 7.0 is not an integer"),
    ({"cells": [[3, "sum", [0, 1], True]], "min_level": 5, "max_level": 4},
     "min_level=5, max_level=4: need 1 <= min_level <= max_level"),
    ({"cells": [[3, "sum", [0, 1], True]], "min_level": 0, "max_level": 4},
     "min_level=0, max_level=4: need 1 <= min_level <= max_level"),
    ("[[3, 'sum', [0, 1]", "spec text is not valid JSON/YAML"),
    ("resnet", "'resnet' is not a known spec name"),
    ("/nonexistent/spec.yaml", "cannot read spec file /nonexistent/spec.yaml"),
    (42, "cells must be a list, got int"),
])
def test_validation_errors_name_the_culprit(value, message):
  with pytest.raises(SpecError) as err:
    parse_spec(value)
  assert message in str(err.value)


@pytest.mark.parametrize("cell, message", [
    ("not a cell", "cell 0: expected CellSpec, got str"),
    (CellSpec(3, "mul", (0, 1), True), "cell 0: op 'mul' is not one of"),
    (CellSpec("3", "sum", (0, 1), True), "cell 0: level '3' is not an integer"),
    (CellSpec(2, "sum", (0, 1), True), "cell 0: level 2 outside 3..7"),
    (CellSpec(3, "sum", (0,), True), "cell 0: inputs must be two pool indices, got (0,)"),
    (CellSpec(3, "sum", 5, True), "cell 0: inputs must be two pool indices, got 5"),
    (CellSpec(3, "sum", ("0", 1), True), "cell 0: first input '0' is not a non-negative integer"),
    (CellSpec(3, "sum", (0, 1), "yes"), "cell 0: is_output must be true or false, got 'yes'"),
])
def test_validation_of_directly_built_specs(cell, message):
  with pytest.raises(SpecError) as err:
    ArchitectureSpec((cell,))
  assert message in str(err.value)


def test_spec_file_errors_name_the_file(tmp_path):
  bad_yaml = tmp_path / "bad.yaml"
  bad_yaml.write_text("cells: [[3, sum, [0, 1], true]\n")
  with pytest.raises(SpecError, match=r"spec file .*bad.yaml is not valid YAML/JSON"):
    parse_spec(str(bad_yaml))
  bad_cell = tmp_path / "cell.json"
  bad_cell.write_text(json.dumps({"cells": [[3, "sum", [0, 9], True]]}))
  with pytest.raises(SpecError, match=r"cell.json: cell 0: second input index 9"):
    parse_spec(str(bad_cell))
  empty = tmp_path / "empty.yaml"
  empty.write_text("")
  with pytest.raises(SpecError, match=r"empty.yaml: cells must be a list, got NoneType"):
    parse_spec(str(empty))


def test_specs_are_hashable_values():
  assert len({parse_spec("nasfpn"), parse_spec("nasfpn"), parse_spec("fpn")}) == 2
  with pytest.raises(dataclasses.FrozenInstanceError):
    parse_spec("nasfpn").cells[0].level = 5
