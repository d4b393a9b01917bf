"""Helpers for the registry tests: in-process nodes on loopback, and member probes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from registry_agents import Probe

import phoenix_cluster as phx
from phoenix_cluster._registry.entries import replica_set
from phoenix_cluster.testing import free_port, wait_until

COOKIE = "registry-test-cookie"

SHARED_LOOP_DETECTION: dict[str, object] = {"probe_interval_s": 0.5, "suspicion_mult": 3}
"""Failure detection for nodes that share this test's one event loop: the detection
defaults used before 2026-12-07 (docs/benchmarks.md measured no false death under full
CPU load with them). The defaults (probe 0.3 s, ``suspicion_mult`` 2) declare a node whose
loop stalls for about a second dead, which is right for one node per process; here a
stall of the loop (a loaded machine) stalls every node at once, so each node's probes of
all the others time out together and members were declared dead that never failed. These
tests cover the registry protocol, not detection (tests/cluster covers that with the
defaults on node processes)."""


def live_members(node: phx.Node) -> set[str]:
    """The members ``node`` sees alive, or an empty set while any is suspect."""
    live = [m for m in node.members() if m.status in ("alive", "suspect") and m.role == "member"]
    return {m.name for m in live} if all(m.status == "alive" for m in live) else set()


async def converged(nodes: Iterable[phx.Node], names: Iterable[str],
                    timeout: float = 20.0) -> None:
    """Wait until every node sees exactly ``names`` as live members, all alive."""
    nodes, want = list(nodes), set(names)
    await wait_until(lambda: all(live_members(n) == want for n in nodes), timeout=timeout,
                     what=f"membership convergence on {sorted(want)}")


async def start_member(name: str, seeds: list[str], **options: object) -> phx.Node:
    node = phx.Node(name=name, listen=f"127.0.0.1:{free_port()}", seeds=seeds,
                    cookie=COOKIE, **{**SHARED_LOOP_DETECTION, **options})  # type: ignore[arg-type]
    await node.start()
    return node


async def start_client(seeds: list[str], **options: object) -> phx.Node:
    node = phx.Node(role="client", listen="127.0.0.1:0", seeds=seeds, cookie=COOKIE,
                    **{**SHARED_LOOP_DETECTION, **options})  # type: ignore[arg-type]
    await node.start()
    return node


def owners(node: phx.Node, name: str) -> list[str]:
    """The replica set of ``name`` in ``node``'s view."""
    ring = node._ring
    assert ring is not None
    return replica_set(ring, name)


def stored_on(nodes: Iterable[phx.Node], name: str) -> set[str]:
    """Which of ``nodes`` store a live registration of ``name``."""
    return {n.name for n in nodes if n.registry._owner.store.get(name) is not None}


async def probe_on(client: phx.Node, node_name: str, *, tries: int = 500) -> phx.AgentRef:
    """A probe agent hosted by member ``node_name`` (found by asking probes where they
    run)."""
    for i in range(tries):
        ref = client.ref(Probe, f"probe-{node_name}-{i}")
        if await ref.where() == node_name:
            return ref
    raise AssertionError(f"no probe key lands on {node_name} in {tries} tries")


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Like ``wait_until`` for a condition that needs awaiting (a call to an agent)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} still false after {timeout}s")
        await asyncio.sleep(0.02)
