"""A fresh cluster per measurement, for ``phx bench cluster`` and the benchmarks built on it.

:func:`run_on_cluster` starts a :class:`~phoenix_cluster.testing.LocalCluster` (real ``phx
node`` processes on loopback that import :mod:`.bench_agents`), joins it as a
``role="client"`` node built from default settings plus the cluster's seeds and secret,
reaches every member once (recording the event loop each runs), and runs the measurement
in a fresh event loop. :func:`summarize` turns timed calls into percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .._agents.ref import AgentRef
from .._foundation.settings import Settings
from .._node import Node
from ..testing import LocalCluster
from .bench_agents import BenchTarget

__all__ = ["TRANSPORTS_ENV", "Measure", "Session", "run_on_cluster", "summarize", "where"]

_IMPORTS = ("phoenix_cluster._cli.bench_agents",)
TRANSPORTS_ENV = "PHX_TRANSPORTS"


class Session:
    """What a measurement gets: the cluster, a client node, and the nodes' loops."""

    def __init__(self, cluster: LocalCluster, client: Node) -> None:
        self.cluster = cluster
        self.client = client
        self.node_loops: set[str] = set()


Measure = Callable[[Session], Awaitable[Any]]


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """Set (``None``: leave alone) one variable of this process's environment for a while."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def run_on_cluster(
    factory: Callable[[], asyncio.AbstractEventLoop],
    members: int,
    measure: Measure,
    node_env: dict[str, str],
    node_loops: set[str],
    *,
    transports: str | None = None,
) -> Any:
    """Run ``measure`` in a fresh loop against a fresh cluster of ``members`` nodes.

    Args:
        transports: a transport chain (``"tcp"``, ``"http2"``, ``"quic"``, ...) for the
            nodes, the client and the cluster's own probe (set as ``PHX_TRANSPORTS`` in
            this process while the cluster runs); ``None`` keeps the defaults.
    """

    async def main() -> Any:
        async with LocalCluster(nodes=members, imports=_IMPORTS, env=node_env) as cluster:
            settings = Settings(
                name=f"bench-client-{secrets.token_hex(3)}",
                role="client",
                seeds=cluster.addresses,
                cookie=cluster.cookie,
                transports=transports or "tcp",
            )
            async with Node(settings=settings) as client:
                session = Session(cluster, client)
                await _probe_members(session, members)
                result = await measure(session)
                node_loops.update(session.node_loops)
                return result

    gc.collect()
    with _environ(TRANSPORTS_ENV, transports), asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1_000.0


def summarize(samples: list[int]) -> dict[str, float]:
    samples.sort()
    total_ns = sum(samples)
    return {
        "calls": float(len(samples)),
        "p50_us": _percentile(samples, 0.50),
        "p95_us": _percentile(samples, 0.95),
        "p99_us": _percentile(samples, 0.99),
        "mean_us": total_ns / len(samples) / 1_000.0,
        "max_us": samples[-1] / 1_000.0,
        "calls_per_s": len(samples) / (total_ns / 1e9),
    }


async def where(session: Session, ref: AgentRef) -> str:
    """The node hosting ``ref``; records the event loop that node runs."""
    info: dict[str, str] = await ref.where()
    session.node_loops.add(info["loop"])
    return info["node"]


async def _probe_members(session: Session, members: int) -> None:
    """Reach every member once (recording the loop each runs) before measuring."""
    seen: set[str] = set()
    for i in range(10_000):
        seen.add(await where(session, session.client.ref(BenchTarget, f"probe-{i}")))
        if len(seen) == members:
            return
    raise RuntimeError(f"reached {len(seen)} of {members} members")  # pragma: no cover
