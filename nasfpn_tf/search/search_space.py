"""The NAS-FPN search space (paper section 3) as a sequence of discrete decisions.

A pyramid of `num_cells` merging cells over the levels `min_level..max_level`.
The pool of feature maps starts with the L = max_level - min_level + 1 input
levels (indices 0..L-1); cell k appends its output (index L + k). Every cell
takes four decisions, in this order:

  step 4k + 0  "input"  first input, any pool index so far (0..L+k-1)
  step 4k + 1  "input"  second input, same choices
  step 4k + 2  "level"  output level, as an offset from `min_level` (0..L-1)
  step 4k + 3  "op"     binary op, an index into `OPS` ("sum", "global_pool")

The last L cells are the outputs and together produce every level exactly once;
their order is the controller's choice, so the level decision of an output cell
is masked to the levels no earlier output cell has produced. An action sequence
(one int per step) and an `ArchitectureSpec` of this shape map to each other one
to one. This module needs only numpy, so Ray trial workers can import it
without TensorFlow.

Example:
  space = SearchSpace()
  actions = space.spec_to_actions(parse_spec("nasfpn"))
  assert space.actions_to_spec(actions) == parse_spec("nasfpn")
  print(space.size())   # number of distinct architectures in the space
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from nasfpn_tf.architecture_spec import OPS, ArchitectureSpec, CellSpec, SpecError

DECISION_KINDS = ("input", "level", "op")
_CELL_STEPS = ("input", "input", "level", "op")


@dataclasses.dataclass(frozen=True)
class Decision:
  """One step of the action sequence.

  Attributes:
    step: position in the action sequence.
    cell: index of the merging cell the decision belongs to.
    kind: "input", "level" or "op" (one controller head per kind).
    field: "input_1", "input_2", "level" or "op".
  """
  step: int
  cell: int
  kind: str
  field: str


class SearchSpace:
  """Maps action sequences to `ArchitectureSpec`s and back; masks invalid choices.

  Args:
    num_cells: merging cells per pyramid (the paper uses 7); at least the number
      of levels, because the last (max_level - min_level + 1) cells are outputs.
    min_level: finest pyramid level.
    max_level: coarsest pyramid level.
  """

  def __init__(self, num_cells: int = 7, min_level: int = 3, max_level: int = 7):
    if min_level < 1 or max_level < min_level:
      raise ValueError(f"need 1 <= min_level <= max_level, got {min_level}, {max_level}")
    num_levels = max_level - min_level + 1
    if num_cells < num_levels:
      raise ValueError(f"num_cells={num_cells} but {num_levels} output cells are needed "
                       f"for levels P{min_level}..P{max_level}")
    self.num_cells = num_cells
    self.min_level = min_level
    self.max_level = max_level
    self.num_levels = num_levels
    self.decisions = tuple(
        Decision(step=4 * k + i, cell=k, kind=kind, field=field)
        for k in range(num_cells)
        for i, (kind, field) in enumerate(zip(_CELL_STEPS, ("input_1", "input_2", "level", "op"))))

  def __repr__(self) -> str:
    return (f"SearchSpace(num_cells={self.num_cells}, min_level={self.min_level}, "
            f"max_level={self.max_level})")

  def __eq__(self, other) -> bool:
    return isinstance(other, SearchSpace) and self.config() == other.config()

  def __hash__(self) -> int:
    return hash(tuple(sorted(self.config().items())))

  def config(self) -> dict[str, int]:
    return {"num_cells": self.num_cells, "min_level": self.min_level,
            "max_level": self.max_level}

  @property
  def num_steps(self) -> int:
    return len(self.decisions)

  @property
  def first_output_cell(self) -> int:
    return self.num_cells - self.num_levels

  def kind_sizes(self) -> dict[str, int]:
    """Number of choices of each kind's head (inputs: the largest pool)."""
    return {"input": self.num_levels + self.num_cells - 1, "level": self.num_levels,
            "op": len(OPS)}

  def step_kinds(self) -> list[str]:
    return [d.kind for d in self.decisions]

  def is_output_cell(self, cell: int) -> bool:
    return cell >= self.first_output_cell

  def static_mask(self, step: int) -> np.ndarray:
    """Valid choices of `step` that do not depend on earlier decisions (bool vector)."""
    d = self.decisions[step]
    mask = np.zeros(self.kind_sizes()[d.kind], dtype=bool)
    if d.kind == "input":
      mask[:self.num_levels + d.cell] = True   # the pool before cell k holds L + k maps
    else:
      mask[:] = True
    return mask

  def is_output_level_step(self, step: int) -> bool:
    """True where the mask also depends on the levels already output."""
    d = self.decisions[step]
    return d.kind == "level" and self.is_output_cell(d.cell)

  def valid_mask(self, step: int, previous: Sequence[int]) -> np.ndarray:
    """Valid choices of `step` given the actions of steps 0..step-1."""
    if len(previous) < step:
      raise ValueError(f"step {step} needs {step} earlier actions, got {len(previous)}")
    mask = self.static_mask(step)
    if self.is_output_level_step(step):
      for s in range(step):
        if self.is_output_level_step(s):
          mask[previous[s]] = False
    return mask

  def check_actions(self, actions: Sequence[int]) -> None:
    """Raises `SpecError` naming the first step (and cell) whose action is invalid."""
    if len(actions) != self.num_steps:
      raise SpecError(f"expected {self.num_steps} actions ({self.num_cells} cells x 4), "
                      f"got {len(actions)}")
    for step, a in enumerate(actions):
      mask = self.valid_mask(step, actions[:step])
      if not (0 <= int(a) < len(mask) and mask[int(a)]):
        d = self.decisions[step]
        raise SpecError(f"cell {d.cell}: {d.field} action {a} at step {step} is not one of "
                        f"{np.flatnonzero(mask).tolist()}")

  def actions_to_spec(self, actions: Sequence[int]) -> ArchitectureSpec:
    """The architecture an action sequence encodes (validated)."""
    actions = [int(a) for a in actions]
    self.check_actions(actions)
    cells = []
    for k in range(self.num_cells):
      in1, in2, level, op = actions[4 * k:4 * k + 4]
      cells.append(CellSpec(level=self.min_level + level, op=OPS[op], inputs=(in1, in2),
                            is_output=self.is_output_cell(k)))
    return ArchitectureSpec(tuple(cells), self.min_level, self.max_level)

  def spec_to_actions(self, spec: ArchitectureSpec) -> list[int]:
    """The action sequence of `spec`; `SpecError` if `spec` is not in this space."""
    if (spec.min_level, spec.max_level) != (self.min_level, self.max_level):
      raise SpecError(f"spec covers P{spec.min_level}..P{spec.max_level}, the search space "
                      f"P{self.min_level}..P{self.max_level}")
    if len(spec.cells) != self.num_cells:
      raise SpecError(f"spec has {len(spec.cells)} cells, the search space {self.num_cells}")
    actions = []
    for k, cell in enumerate(spec.cells):
      if cell.is_output != self.is_output_cell(k):
        raise SpecError(f"cell {k}: is_output={cell.is_output}, but in this search space only "
                        f"the last {self.num_levels} cells are outputs")
      actions += [cell.inputs[0], cell.inputs[1], cell.level - self.min_level, OPS.index(cell.op)]
    self.check_actions(actions)
    return actions

  def sample_uniform(self, rng: np.random.Generator) -> list[int]:
    """One action sequence, each decision uniform over its valid choices (random search)."""
    actions: list[int] = []
    for step in range(self.num_steps):
      actions.append(int(rng.choice(np.flatnonzero(self.valid_mask(step, actions)))))
    return actions

  def size(self) -> int:
    """Number of distinct action sequences = distinct specs of this shape.

    Inputs are ordered pairs (the first input breaks global-pool ties), the same
    index may be taken twice, and the outputs' order counts (L! orders).
    """
    inputs = math.prod((self.num_levels + k) ** 2 for k in range(self.num_cells))
    inner_levels = self.num_levels ** self.first_output_cell
    output_orders = math.factorial(self.num_levels)
    return inputs * inner_levels * output_orders * len(OPS) ** self.num_cells


def similarity(actions: Sequence[int], target: Sequence[int]) -> float:
  """Fraction of decisions equal to the target's (1.0 only for the target itself)."""
  if len(actions) != len(target):
    raise ValueError(f"{len(actions)} actions vs {len(target)} target actions")
  return float(np.mean(np.asarray(actions) == np.asarray(target)))
