"""The import graph of nasfpn_tf: no cycles, and the lower layers do not import the upper ones.

Read from the source with `ast` (nothing is imported), every `import` counted wherever it
stands, inside functions included: a function-level import is still a dependency, only a
later one. Imports under `if TYPE_CHECKING:` are left out, as they never run.

  python tests/test_import_graph.py     # prints the edges and any cycles
"""

from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "nasfpn_tf"

# (importer prefix, imported prefix): what the layer rules forbid.
FORBIDDEN = [
    # The model is a Keras model and nothing more: how it is trained, distributed, served or
    # searched is decided by the code that uses it.
    ("nasfpn_tf.modeling", "nasfpn_tf.distribute"),
    ("nasfpn_tf.modeling", "nasfpn_tf.serving"),
    ("nasfpn_tf.modeling", "nasfpn_tf.trainer"),
    ("nasfpn_tf.modeling", "nasfpn_tf.training"),
    ("nasfpn_tf.modeling", "nasfpn_tf.search"),
    # Evaluation scores detections; it does not go through the export path.
    ("nasfpn_tf.evaluation", "nasfpn_tf.serving"),
]
# Edges a rule above forbids but that are allowed, with the reason.
ALLOWED = {
    # The one-shot supernet samples its paths from the search space (a pure-Python module
    # that imports only architecture_spec). search_space.py belongs with the search, and
    # search/ is being reorganised; moving it under modeling/ is left for later.
    ("nasfpn_tf.modeling.supernet_model", "nasfpn_tf.search.search_space"),
    ("nasfpn_tf.modeling.decoders.nasfpn_supernet", "nasfpn_tf.search.search_space"),
    # Keras' convention, `model.export(path, format=...)`: RetinaNetModel.export hands the
    # model to the serving code that writes the NMS-in-graph signatures. Imported inside the
    # method, at call time, so that building or training a model never loads serving/.
    ("nasfpn_tf.modeling.retinanet_model", "nasfpn_tf.serving.export_lib"),
}
# Cycles tolerated for now, with the reason. search/ is being reorganised in a change of its
# own (role names, rewards in one file); this cycle of two function-level imports is its to
# remove. Tolerated, not required: the test passes once it is gone.
KNOWN_CYCLES = [
    ["nasfpn_tf.search.oneshot", "nasfpn_tf.search.proxy_validation"],
    # Closed only by the call-time import of `RetinaNetModel.export` above (export_lib builds
    # a model from a config through the factory): no module imports another at load time.
    ["nasfpn_tf.modeling.factory", "nasfpn_tf.modeling.retinanet_model",
     "nasfpn_tf.modeling.supernet_model", "nasfpn_tf.serving.export_lib"],
]


def modules(root: str = ROOT) -> dict[str, str]:
  """Dotted module name -> file, for every .py file of the package."""
  found = {}
  for folder, _, files in os.walk(os.path.join(root, PACKAGE)):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      parts = os.path.relpath(path, root)[:-3].split(os.sep)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      found[".".join(parts)] = path
  return found


def _is_type_checking(node: ast.If) -> bool:
  test = node.test
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
  """Every Import / ImportFrom node, except those under `if TYPE_CHECKING:`."""
  stack = [tree]
  while stack:
    node = stack.pop()
    if isinstance(node, ast.If) and _is_type_checking(node):
      stack.extend(node.orelse)
      continue
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, known: dict[str, str]) -> str | None:
  """The package module `name` runs: itself, else its closest parent that is one."""
  while name:
    if name in known:
      return name
    name = name.rpartition(".")[0]
  return None


def import_graph(root: str = ROOT) -> dict[str, set[str]]:
  """Module -> the package modules it imports."""
  known = modules(root)
  graph: dict[str, set[str]] = {m: set() for m in known}
  for module, path in known.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    for node in _imports(tree):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      else:
        base = node.module or ""
        if node.level:  # relative: from the module's own package
          package = module if is_package else module.rpartition(".")[0]
          for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
          base = f"{package}.{base}" if base else package
        # `from a.b import c`: the module a.b.c if there is one, else a.b.
        targets = [f"{base}.{alias.name}" for alias in node.names]
      for target in targets:
        if not target.startswith(PACKAGE):
          continue
        resolved = _resolve(target, known)
        if resolved and resolved != module:
          graph[module].add(resolved)
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, found = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(found)


def _within(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + ".")


def forbidden_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
  return sorted((a, b) for a, targets in graph.items() for b in targets
                for low, high in FORBIDDEN
                if _within(a, low) and _within(b, high) and (a, b) not in ALLOWED)


def test_the_package_has_no_import_cycles():
  found = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
  assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_lower_layers_do_not_import_upper_ones():
  edges = forbidden_edges(import_graph())
  assert not edges, "forbidden imports:\n" + "\n".join(f"{a} -> {b}" for a, b in edges)


def test_the_allowed_exceptions_still_exist():
  # An exception nobody needs any more should go, not linger as a licence.
  graph = import_graph()
  assert [(a, b) for a, b in sorted(ALLOWED) if b not in graph.get(a, ())] == []


def test_the_graph_sees_function_level_imports(tmp_path):
  # The checker itself: a cycle closed by an import inside a function is found.
  package = tmp_path / PACKAGE
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "a.py").write_text("from nasfpn_tf import b\n")
  (package / "b.py").write_text("def f():\n  from nasfpn_tf.a import g\n")
  (package / "c.py").write_text("from typing import TYPE_CHECKING\n"
                                "if TYPE_CHECKING:\n  from nasfpn_tf import a\n")
  graph = import_graph(str(tmp_path))
  assert cycles(graph) == [["nasfpn_tf.a", "nasfpn_tf.b"]]
  assert graph["nasfpn_tf.c"] == set()


if __name__ == "__main__":
  g = import_graph()
  for module in sorted(g):
    print(module, "->", ", ".join(sorted(g[module])) or "-")
  print("\ncycles:", cycles(g) or "none")
  print("forbidden:", forbidden_edges(g) or "none")
