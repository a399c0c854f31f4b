import json

import pytest
import yaml

from nasfpn_tf.architecture_spec import (ArchitectureSpec, CellSpec, SpecError, from_records,
                                         from_string, parse_spec)
from nasfpn_tf.named_specs import NAMED_SPECS

PUBLISHED = [(4, "global_pool", (1, 3), False), (4, "sum", (1, 5), False),
             (3, "sum", (0, 6), True), (4, "sum", (6, 7), True),
             (5, "global_pool", (7, 8), True), (7, "global_pool", (6, 9), True),
             (6, "global_pool", (9, 10), True)]


def test_published_cell_matches_the_reference_table():
  spec = parse_spec("nasfpn")
  assert [(c.level, c.op, c.inputs, c.is_output) for c in spec.cells] == PUBLISHED
  assert spec.output_cells() == {3: 2, 4: 3, 5: 4, 7: 5, 6: 6}


@pytest.mark.parametrize("name", sorted(NAMED_SPECS))
def test_every_spelling_round_trips(name, tmp_path):
  spec = parse_spec(name)
  assert from_string(spec.to_string()) == spec
  assert from_records(spec.to_records()) == spec
  assert parse_spec(json.dumps(spec.to_records())) == spec
  path = tmp_path / f"{name}.yaml"
  path.write_text(spec.to_yaml())
  assert parse_spec(str(path)) == spec
  assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_compact_string_aliases_and_tuples():
  spec = parse_spec("P6:sum:4,3:out P5:global_pool:5,2:out P4:sum:6,1:out P3:gp:7,0:out "
                    "P7:sum:4,5:out")
  assert spec.cells[1].op == "global_pool" and spec.cells[3].op == "global_pool"
  assert parse_spec([[6, "sum", [4, 3], True]] + [list(c.to_record().values())
                                                   for c in spec.cells[1:]]) == \
      ArchitectureSpec((CellSpec(6, "sum", (4, 3), True),) + spec.cells[1:])


@pytest.mark.parametrize("text, message", [
    ("P4:sum:1,11:out", "cell 0: second input index 11 but only 5 feature maps exist"),
    ("P9:sum:0,1", "cell 0: level 9 outside 3..7"),
    ("P4:mul:0,1", "cell 0: op 'mul' is not one of"),
    ("P4:sum:0", "cell 0: inputs must be two pool indices, got [0]"),
    ("P4:sum:a,b", "cell 0: inputs 'a,b' are not two integers"),
    ("P4:sum:0,1:x", "cell 0: 'P4:sum:0,1:x' is not LEVEL:OP:IN1,IN2[:out]"),
    ("P3:sum:0,1:out P4:sum:0,1:out P5:sum:0,1:out P6:sum:0,1:out", "no output cell for level(s) P7"),
    ("P3:sum:0,1:out P3:sum:0,1:out", "cell 1: level P3 already output by cell 0"),
    ("Px:sum:0,1", "cell 0: level 'x' is not an integer"),
])
def test_validation_errors_name_cell_and_field(text, message):
  with pytest.raises(SpecError) as err:
    parse_spec(text)
  assert message in str(err.value)


def test_record_errors():
  with pytest.raises(SpecError, match="cell 0: missing field 'inputs'"):
    from_records([{"level": 3, "op": "sum"}])
  with pytest.raises(SpecError, match=r"cell 0: unknown field\(s\) \['colour'\]"):
    from_records([{"level": 3, "op": "sum", "inputs": [0, 1], "colour": 1}])
  with pytest.raises(SpecError, match="cell 0: is_output must be true or false"):
    from_records([{"level": 3, "op": "sum", "inputs": [0, 1], "is_output": "yes"}])
  with pytest.raises(SpecError, match="cell 0: first input -1 is not a non-negative integer"):
    from_records([[3, "sum", [-1, 1], True]])
  with pytest.raises(SpecError, match="spec has no cells"):
    from_records([])
  with pytest.raises(SpecError, match="not a known spec name"):
    parse_spec("resnet")
  with pytest.raises(SpecError, match="cannot read spec file"):
    parse_spec("/nonexistent/spec.yaml")


def test_levels_follow_the_caller():
  spec = parse_spec("P3:sum:0,1:out P4:sum:1,2:out P5:sum:2,0:out", min_level=3, max_level=5)
  assert spec.num_inputs == 3 and spec.pool_levels() == [3, 4, 5, 3, 4, 5]
