"""One in-memory cluster on one virtual-time loop, shared by the tests of a module that
leave it as they found it (``phoenix_cluster.testing.memory``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster, VirtualTimeLoop


class SharedCluster:
    """``size`` nodes started once; :meth:`run` runs a scenario on them."""

    def __init__(self, size: int) -> None:
        self.loop = VirtualTimeLoop()
        self.cluster = MemoryCluster(size)
        self.loop.run_until_complete(self.cluster.__aenter__())

    def run(self, scenario: Callable[[MemoryCluster], Coroutine[Any, Any, None]]) -> None:
        self.loop.run_until_complete(asyncio.wait_for(scenario(self.cluster), 600.0))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.cluster.aclose())
        finally:
            self.loop.close()


def shared_cluster(size: int) -> Iterator[SharedCluster]:
    """The body of a module-scoped fixture: the cluster, closed after the module."""
    cluster = SharedCluster(size)
    try:
        yield cluster
    finally:
        cluster.close()


async def key_hosted_by(node: phx.Node, owner: str, kind: type[phx.Agent],
                        prefix: str = "k") -> str:
    """A key of ``kind`` whose home, as ``node`` sees it, is the node named ``owner``."""
    for i in range(1000):
        key = f"{prefix}{i}"
        if await node.where(node.ref(kind, key)) == owner:
            return key
    raise AssertionError(f"no key of 1000 lives on {owner}")
