"""Stateless workers (``placement="stateless"``): up to ``max_workers`` activations of
one key per node run at once, on whichever member the call reaches; a client's calls go
to the members; nothing is replicated or kept (``_agents/workers.py``).

In one process on the in-memory network, in virtual time."""

from __future__ import annotations

import asyncio

import pytest

import phoenix_cluster as phx
from phoenix_cluster._agents.kind_options import DEFAULT_MAX_WORKERS
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for


class _Gauge:
    """How many handlers run at once (the nodes share this process)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()

    def reset(self) -> None:
        self.running = self.peak = 0
        self.release = asyncio.Event()


GAUGE = _Gauge()


class Resizer(phx.Agent, kind="tests.stateless.resizer", placement="stateless",
              max_workers=3):
    def __init__(self) -> None:
        self.served = 0

    async def work(self, n: int) -> list[object]:
        GAUGE.running += 1
        GAUGE.peak = max(GAUGE.peak, GAUGE.running)
        try:
            await GAUGE.release.wait()
        finally:
            GAUGE.running -= 1
        self.served += 1
        return [n * 2, self.key, str(self.node.name), self.served]

    async def where(self) -> list[str]:
        return [self.key, str(self.node.name)]


class Defaulted(phx.Agent, kind="tests.stateless.defaulted", placement="stateless"):
    async def ping(self) -> str:
        return "pong"


def test_options() -> None:
    spec = Resizer._phx_spec
    assert (spec.stateless, spec.max_workers, spec.durability) == (True, 3, "none")
    assert Defaulted._phx_spec.max_workers == DEFAULT_MAX_WORKERS == 4
    with pytest.raises(phx.ConfigError, match="max_workers needs placement='stateless'"):
        class NoPlacement(phx.Agent, kind="tests.stateless.bad1", max_workers=2):
            pass
    with pytest.raises(phx.ConfigError, match="max_workers must be an int >= 1"):
        class Zero(phx.Agent, kind="tests.stateless.bad2", placement="stateless",
                   max_workers=0):
            pass
    with pytest.raises(phx.ConfigError, match="durability is 'none'"):
        class Durable(phx.Agent, kind="tests.stateless.bad3", placement="stateless",
                      durability="quorum"):
            pass


async def _parallel_on_one_node(node: phx.Node) -> None:
    GAUGE.reset()
    ref = node.ref(Resizer, "thumbnails")
    calls = [asyncio.create_task(ref.work(i)) for i in range(7)]
    await wait_for(lambda: GAUGE.running == 3, 10.0, what="three workers busy")
    await asyncio.sleep(1.0)  # virtual: the other four stay queued
    assert GAUGE.running == 3
    GAUGE.release.set()
    results = await asyncio.gather(*calls)
    assert GAUGE.peak == 3
    assert sorted(r[0] for r in results) == [0, 2, 4, 6, 8, 10, 12]
    assert {r[1] for r in results} == {"thumbnails"}  # Agent.key hides the worker number
    assert {r[2] for r in results} == {node.name}
    # Each worker keeps its own (volatile) state: 7 calls over 3 workers.
    assert sum(1 for r in results if r[3] == 1) == 3
    kr = node.kinds()["tests.stateless.resizer"]
    assert sorted(k for k in kr.activations if k.startswith("thumbnails")) == [
        "thumbnails\x000", "thumbnails\x001", "thumbnails\x002"]


def test_embedded_node_runs_up_to_max_workers_at_once() -> None:
    async def scenario() -> None:
        async with phx.Node() as node:
            await _parallel_on_one_node(node)

    run_virtual(scenario())


def test_members_serve_locally_and_clients_spread_over_members() -> None:
    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            a, b, c = cluster.nodes
            for node in (a, b, c):
                # Served where the call is made, for any key (no home, no redirect).
                for key in ("k1", "k2", "k3"):
                    assert await node.ref(Resizer, key).where() == [key, node.name]
            await _parallel_on_one_node(b)
            assert await b.where(b.ref(Resizer, "k1")) == b.name
            with pytest.raises(phx.ConfigError, match="stateless worker"):
                await a.migrate(a.ref(Resizer, "k1"), to=b.name)
            client = await cluster.add("client", role="client")
            await wait_for(lambda: client.joined, 30.0, what="the client joining")
            hosts = {(await client.ref(Resizer, "hot").where())[1] for _ in range(6)}
            assert hosts == {a.name, b.name, c.name}
            # Nothing replicated, nothing passivated kept: no state left after a sweep.
            kr = a.kinds()["tests.stateless.resizer"]
            assert kr.activations
            for act in kr.activations.values():
                act.last_used -= 10_000
            a._runtime.sweep_idle()
            assert not kr.activations and not kr.passive

    run_virtual(scenario())
