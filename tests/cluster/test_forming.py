"""Forming a cluster in one process: who forms a cluster of one, and who waits to join."""

from __future__ import annotations

import asyncio

from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster.testing import free_port, wait_until

COOKIE = "forming-nodes-cookie"
SEED_TIMEOUT_S = 0.3


def two_addresses() -> tuple[str, str]:
    """Two free loopback addresses, the lower (as strings compare) first."""
    low, high = sorted(f"127.0.0.1:{free_port()}" for _ in range(2))
    return low, high


async def test_by_discovery_the_higher_address_waits_for_the_lowest() -> None:
    low, high = two_addresses()
    spec = f"static:{low},{high}"
    async with phx.Node(name="high", listen=high, cookie=COOKIE, discovery=spec,
                        seed_timeout_s=SEED_TIMEOUT_S) as waiting:
        # Several seed timeouts without the lower node: it still has not formed one.
        await asyncio.sleep(SEED_TIMEOUT_S * 5)
        assert not waiting.joined
        with_lowest = phx.Node(name="low", listen=low, cookie=COOKIE, discovery=spec,
                               seed_timeout_s=SEED_TIMEOUT_S)
        async with with_lowest:
            await wait_until(lambda: waiting.joined and with_lowest.joined, timeout=20,
                             what="both to be in one cluster")
            assert {await waiting.where(waiting.ref(Tally, f"t{i}")) for i in range(20)} \
                == {"low", "high"}


async def test_by_discovery_the_lowest_address_forms_alone() -> None:
    low, high = two_addresses()
    async with phx.Node(name="low", listen=low, cookie=COOKIE,
                        discovery=f"static:{low},{high}",
                        seed_timeout_s=SEED_TIMEOUT_S) as node:
        await wait_until(lambda: node.joined, timeout=20, what="low to form a cluster")
        assert await node.ref(Tally, "x").add(1) == 1
