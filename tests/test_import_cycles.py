"""No import cycle anywhere in ``src/phoenix_cluster`` (the layer rules are in test_layers.py).

The graph has one node per module and one edge per import that names a module of the
package: ``import phoenix_cluster.x``, ``from phoenix_cluster.x import y`` (an edge to
``x.y`` when ``y`` is a submodule, else to ``x``), relative imports, and
``importlib.import_module`` with a string literal (or an f-string whose fixed prefix names a
package: an edge to that package). Imports inside functions and under ``TYPE_CHECKING``
count too: a lazy import hides a cycle from the interpreter, not from the reader, and the
pieces still cannot be built or tested alone. Parent packages are not edges (importing
``a.b`` runs ``a/__init__``, but every module would then sit in one circle with the
top-level ``__init__`` that re-exports the public API).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "phoenix_cluster"
ROOT = "phoenix_cluster"

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([ROOT, *parts])


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` denotes (``a.b.c`` may be attribute ``c`` of module ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _import_targets(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that ``module`` imports (names, not yet resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names.add(source)
            # ``from pkg import sub``: sub may be a module.
            names.update(f"{source}.{alias.name}" for alias in node.names
                         if f"{source}.{alias.name}" in modules)
        elif (isinstance(node, ast.Call) and node.args
              and _is_import_module(node.func)):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif (isinstance(arg, ast.JoinedStr) and arg.values
                  and isinstance(arg.values[0], ast.Constant)):
                names.add(str(arg.values[0].value).rstrip("."))
    return {name for name in names if name == ROOT or name.startswith(ROOT + ".")}


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id == "import_module"


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {_resolve(n, modules) for n in _import_targets(module, path, modules)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _short(component: frozenset[str]) -> str:
    return ", ".join(sorted(m.removeprefix(ROOT + ".") for m in component))


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    # a relative ``from . import x`` of a submodule
    assert "phoenix_cluster.crdt" in graph["phoenix_cluster"]
    # ``importlib.import_module(f"phoenix_cluster._membership.{module}")``
    assert "phoenix_cluster._membership" in graph["phoenix_cluster._membership.discovery_spec"]
    # an absolute ``from phoenix_cluster._x import y``
    assert any(t.startswith("phoenix_cluster._") for t in graph["phoenix_cluster.testing.chaos"])


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(_short(c) for c in found)
