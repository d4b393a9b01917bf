"""The floor plan holds: no module imports a higher layer; pure modules avoid asyncio."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "phoenix_cluster"

# Layer of each top-level module or package (a module imports only its own layer or lower ones).
LAYERS = {
    "errors": 0, "_errors": 0, "_version": 0, "_foundation": 0, "_telemetry": 0, "_resilience": 0,
    "_crdt": 0,
    "_coordination": 7,
    "_wire": 1, "_transport": 2, "_membership": 3, "_ring": 4, "_splitbrain": 4,
    "_replication": 5, "_placement": 5, "_stores": 5, "_agents": 6, "_registry": 7, "_node": 8,
    "_web": 7, "_cli": 9, "testing": 9, "telemetry": 9, "crdt": 9,
    "coordination": 9, "__init__": 10,
    "__main__": 10,
}

# Modules that must stay I/O-free: protocol logic fed by a service module.
PURE = ["_wire/messages.py", "_wire/codec.py", "_wire/frames.py", "_wire/handshake.py",
        "_wire/handshake_proof.py",
        "_membership/snapshot.py", "_ring/hashing.py", "_ring/ring.py", "_ring/partitions.py",
        "_splitbrain/strategies.py", "_splitbrain/view.py", "_splitbrain/tracker.py",
        "_membership/swim.py",
        "_membership/dissemination.py", "_membership/health.py", "_membership/messages.py",
        "_registry/entries.py", "_registry/store.py", "_registry/messages.py",
        "_registry/settings.py", "_registry/ordering.py", "_placement/policies.py",
        "_crdt/dots.py", "_crdt/stores.py", "_crdt/base.py", "_crdt/counters.py",
        "_crdt/sets.py", "_crdt/registers.py", "_crdt/batch.py", "_crdt/maps.py", "_crdt/buffer.py",
        "_replication/types.py", "_replication/messages.py", "_replication/replica.py",
        "_replication/leader.py", "_replication/settings.py", "_replication/merging.py",
        "_membership/joining.py", "_membership/timing.py", "_membership/actions.py",
        "_membership/table.py", "_membership/verdicts.py", "_membership/probing.py",
        "_transport/memory_links.py", "_coordination/permits.py",
        "_coordination/barrier_state.py", "_coordination/saga_state.py"]


def _top(module: Path) -> str:
    rel = module.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    """Top-level package parts imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    depth_base = path.relative_to(PKG).parts[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = depth_base[: len(depth_base) - (node.level - 1)]
                parts = [*base, *(node.module.split(".") if node.module else [])]
                if parts:
                    found.append(parts[0])
                else:
                    found.extend(alias.name for alias in node.names)
            elif node.module and node.module.startswith("phoenix_cluster."):
                found.append(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("phoenix_cluster."):
                    found.append(alias.name.split(".")[1])
    return found


SOURCES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_upward_imports(path: Path) -> None:
    own = LAYERS[_top(path)]
    for target in _imports(path):
        target = target.removesuffix(".py")
        assert target in LAYERS, f"{path.name} imports unknown module {target}"
        assert LAYERS[target] <= own, (
            f"{path.relative_to(PKG)} (layer {own}) imports {target} (layer {LAYERS[target]})"
        )


@pytest.mark.parametrize("rel", PURE)
def test_pure_modules_never_import_asyncio(rel: str) -> None:
    path = PKG / rel
    if not path.exists():
        pytest.fail(f"{rel} is listed as pure but does not exist")
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {"asyncio", "socket", "selectors"} & names


def _imports_top_level(path: Path) -> bool:
    """Whether ``path`` imports ``phoenix_cluster`` itself (absolute or relative), as
    opposed to one of its modules."""
    depth = len(path.relative_to(PKG).parts) - 1
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            if any(alias.name == "phoenix_cluster" for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module == "phoenix_cluster":
                return True
            # ``from .. import x`` reaching the package root: x may be a module
            if node.level and node.level - 1 == depth and not node.module and any(
                    not (PKG / alias.name).exists() and not (PKG / f"{alias.name}.py").exists()
                    for alias in node.names):
                return True
    return False


def test_no_module_imports_the_top_level_package() -> None:
    """Inside the package, modules import the modules that define what they use, never
    ``phoenix_cluster`` itself (demos, benchmarks and chaos tooling included): the
    package's ``__init__`` imports them all, so the other way round is a cycle."""
    offenders = sorted(str(p.relative_to(PKG)) for p in SOURCES
                       if p.name != "__init__.py" or p.parent != PKG
                       if _imports_top_level(p))
    assert not offenders, offenders


LOWER_THAN_AGENTS = sorted(p for p in SOURCES if LAYERS[_top(p)] < LAYERS["_agents"])


@pytest.mark.parametrize("path", LOWER_THAN_AGENTS, ids=lambda p: str(p.relative_to(PKG)))
def test_no_lower_layer_imports_the_agent_layer(path: Path) -> None:
    """RPC lives in the transport layer: membership, replication, CRDT sync and placement
    never reach the agent layer (the layer table would allow a mistake in LAYERS)."""
    assert "_agents" not in _imports(path), f"{path.relative_to(PKG)} imports _agents"


# What the agent runtime reaches beyond its agents (``_agents/cluster.py``), and the names
# the runtime and its seam go by: no module assigns these from outside their own class.
CLUSTER_PARTS = {"router", "placement", "replicator", "crdt_sync", "tracer", "sync", "cluster"}
RUNTIME_NAMES = {"runtime", "_runtime", "cluster", "_cluster", "active_active", "_stack"}


def _assigned_attributes(target: ast.expr) -> list[ast.Attribute]:
    if isinstance(target, ast.Tuple | ast.List):
        return [a for e in target.elts for a in _assigned_attributes(e)]
    return [target] if isinstance(target, ast.Attribute) else []


def test_nothing_wires_the_agent_runtime_after_its_construction() -> None:
    """The node builds the stack bottom-up: the runtime gets its ``Cluster`` seam at
    construction and each part gets the runtime at its own; nobody sets
    ``node._runtime.router = ...``, ``runtime.placement = ...`` or ``active.sync = ...``
    (docs/design/architecture.md, "The runtime's one cycle")."""
    late = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            else:
                continue
            for attribute in (a for t in targets for a in _assigned_attributes(t)):
                owner = ast.unparse(attribute.value)
                if owner != "self" and (attribute.attr in CLUSTER_PARTS
                                        or owner.split(".")[-1] in RUNTIME_NAMES):
                    late.append(f"{path.relative_to(PKG)}:{node.lineno}: "
                                f"{ast.unparse(attribute)} = ...")
    assert not late, late
