"""pytest fixtures for testing Phoenix agents: an embedded node and real local clusters.

Installed with ``phoenix-cluster`` as the pytest plugin ``phoenix_cluster`` (entry point
``pytest11``), so the fixtures are available in every test suite of a project that has
Phoenix installed; nothing to import. The fixtures are async and need
`pytest-asyncio <https://pypi.org/project/pytest-asyncio/>`_ (``pip install
pytest-asyncio``): with ``asyncio_mode = "auto"`` any ``async def`` test can use them,
in the default strict mode mark the tests ``@pytest.mark.asyncio``. See
``docs/testing.md``.

Fixtures:

``phx_node``
    An embedded, started :class:`~phoenix_cluster.Node` (``phx.Node()``: a cluster of
    one, no network), closed after the test. ``@pytest.mark.phx_node(**options)`` passes
    keyword arguments to ``Node``.
``phx_cluster_factory``
    ``await make(nodes=3, imports=[...], **options)`` starts a
    :class:`~phoenix_cluster.testing.LocalCluster` of real ``phx node`` processes on
    loopback, waits until it converged and returns it; ``options`` go to
    ``LocalCluster`` (``node_args``, ``env``, ...). Every cluster made is closed at
    teardown, also when the test fails.
``phx_cluster``
    One started ``LocalCluster``. Its size and the modules its nodes import (so they can
    host your agent kinds) come from the markers ``@pytest.mark.phx_cluster_nodes(n)``
    and ``@pytest.mark.phx_cluster_imports("myapp.agents", ...)`` (the closest wins:
    test, class, then module ``pytestmark``), else from the ini options
    ``phx_cluster_nodes`` (default 3) and ``phx_cluster_imports`` (a list of modules).

The fixtures are function-scoped and run on the loop pytest-asyncio gives function-scoped
fixtures (``asyncio_default_fixture_loop_scope``); keep it the same as the tests'.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from .._node import Node
    from ._local_cluster import LocalCluster

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is in the test extra
    _pytest_asyncio: Any = None
else:
    _pytest_asyncio = pytest_asyncio

__all__ = ["ClusterFactory", "phx_cluster", "phx_cluster_factory", "phx_node"]

NODES_OPTION = "phx_cluster_nodes"
IMPORTS_OPTION = "phx_cluster_imports"
DEFAULT_NODES = 3

_F = TypeVar("_F", bound=Callable[..., Any])

_NEEDS_PYTEST_ASYNCIO = (
    "the Phoenix fixture {name!r} is async and needs pytest-asyncio:"
    " pip install pytest-asyncio (see docs/testing.md)"
)


class ClusterFactory(Protocol):
    """What ``phx_cluster_factory`` gives: ``await make(nodes=3, imports=[...])``."""

    async def __call__(self, nodes: int = DEFAULT_NODES, imports: Sequence[str] = (),
                       **options: Any) -> LocalCluster: ...


def _async_fixture(fn: _F) -> _F:
    """``pytest_asyncio.fixture`` (works in strict and auto mode), or, without
    pytest-asyncio, a fixture that fails the test saying what to install."""
    if _pytest_asyncio is not None:
        return cast("_F", _pytest_asyncio.fixture(fn))

    name = fn.__name__

    def missing() -> None:  # pragma: no cover - exercised only without pytest-asyncio
        pytest.fail(_NEEDS_PYTEST_ASYNCIO.format(name=name), pytrace=False)

    missing.__doc__ = fn.__doc__
    return cast("_F", pytest.fixture(name=name)(missing))


# ---------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(NODES_OPTION, "Phoenix: nodes of the phx_cluster fixture's LocalCluster"
                  f" (default {DEFAULT_NODES}).", default=str(DEFAULT_NODES))
    parser.addini(IMPORTS_OPTION, "Phoenix: modules the phx_cluster fixture's nodes import"
                  " (so they can host those agent kinds).", type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "phx_cluster_nodes(n): how many node processes the phx_cluster"
        " fixture starts (Phoenix).")
    config.addinivalue_line(
        "markers", "phx_cluster_imports(*modules): modules the phx_cluster fixture's"
        " nodes import, so they can host those agent kinds (Phoenix).")
    config.addinivalue_line(
        "markers", "phx_node(**options): keyword arguments for the phx_node fixture's"
        " phx.Node (Phoenix).")


# ---------------------------------------------------------------------- options


def _nodes(request: pytest.FixtureRequest) -> int:
    marker = request.node.get_closest_marker(NODES_OPTION)
    raw: object
    if marker is not None:
        if len(marker.args) + len(marker.kwargs) != 1 or set(marker.kwargs) - {"n", "nodes"}:
            raise pytest.UsageError(
                f"@pytest.mark.{NODES_OPTION} takes one number, e.g."
                f" @pytest.mark.{NODES_OPTION}(2); got args={marker.args!r}"
                f" kwargs={marker.kwargs!r}")
        raw = marker.args[0] if marker.args else next(iter(marker.kwargs.values()))
        where = f"@pytest.mark.{NODES_OPTION}"
    else:
        raw = request.config.getini(NODES_OPTION)
        where = f"the ini option {NODES_OPTION}"
    nodes = 0
    if isinstance(raw, int) and not isinstance(raw, bool):
        nodes = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        nodes = int(raw)
    if nodes < 1:
        raise pytest.UsageError(f"{where} must be a whole number >= 1, got {raw!r}")
    return nodes


def _imports(request: pytest.FixtureRequest) -> list[str]:
    marker = request.node.get_closest_marker(IMPORTS_OPTION)
    if marker is None:
        return [str(m) for m in request.config.getini(IMPORTS_OPTION)]
    modules: list[str] = []
    if set(marker.kwargs) - {"modules"}:
        raise pytest.UsageError(f"@pytest.mark.{IMPORTS_OPTION} takes module names and no"
                                f" keyword but modules=; got {marker.kwargs!r}")
    values: list[object] = list(marker.args)
    if "modules" in marker.kwargs:
        values.append(marker.kwargs["modules"])
    for value in values:
        if isinstance(value, str):
            modules.append(value)
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            modules.extend(value)
        else:
            raise pytest.UsageError(
                f"@pytest.mark.{IMPORTS_OPTION} takes module names, e.g."
                f' @pytest.mark.{IMPORTS_OPTION}("myapp.agents"); got {value!r}')
    return modules


# ---------------------------------------------------------------------- fixtures


@_async_fixture
async def phx_node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    """An embedded, started ``phx.Node()`` (a cluster of one), closed after the test.

    ``@pytest.mark.phx_node(**options)`` passes keyword arguments to ``phx.Node``.
    """
    from .._node import Node

    marker = request.node.get_closest_marker("phx_node")
    if marker is not None and marker.args:
        raise pytest.UsageError("@pytest.mark.phx_node takes keyword arguments only")
    options = dict(marker.kwargs) if marker is not None else {}
    async with Node(**options) as node:
        yield node


@_async_fixture
async def phx_cluster_factory() -> AsyncIterator[ClusterFactory]:
    """``await make(nodes=3, imports=[...], **options)``: a started, converged
    ``LocalCluster``; every cluster made is closed at teardown."""
    from ._local_cluster import LocalCluster

    async with contextlib.AsyncExitStack() as stack:

        async def make(nodes: int = DEFAULT_NODES, imports: Sequence[str] = (),
                       **options: Any) -> LocalCluster:
            if isinstance(imports, str):
                imports = [imports]
            cluster = LocalCluster(nodes=nodes, imports=imports, **options)
            return await stack.enter_async_context(cluster)

        yield make


@_async_fixture
async def phx_cluster(request: pytest.FixtureRequest,
                      phx_cluster_factory: ClusterFactory) -> LocalCluster:
    """A started ``LocalCluster``, sized by ``phx_cluster_nodes`` and importing
    ``phx_cluster_imports`` (markers, else ini options); closed after the test."""
    return await phx_cluster_factory(nodes=_nodes(request), imports=_imports(request))
