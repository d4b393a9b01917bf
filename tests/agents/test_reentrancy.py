"""Call cycles and reentrancy (``_agents/chain.py``, the drain of ``runtime.py``) on
whole nodes in one process, in virtual time: a cycle fails at once with ``CallCycle``
naming the chain (on one node and across nodes), a reentrant method or kind lets the
call back in, a malformed chain header is refused, and what a failed message does to a
waiting reentrant handler's changes (docs/reminders.md, "Reentrancy")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from shared_cluster import SharedCluster as Shared
from shared_cluster import shared_cluster

import phoenix_cluster as phx
from phoenix_cluster._agents.chain import CHAIN_HEADER
from phoenix_cluster._wire.codec import encode_payload
from phoenix_cluster._wire.messages import Call, Error
from phoenix_cluster.testing.memory import MemoryCluster

GATES: dict[str, asyncio.Event] = {}
"""Events a test opens to let a waiting handler go on (the nodes share this process)."""


class Ping(phx.Agent, kind="tests.reentrancy.ping"):
    """Not reentrant: a call back into it while it waits is a cycle."""

    def __init__(self) -> None:
        self.hits = 0

    async def via(self, other: str, back: str) -> int:
        return int(await self.node.ref(Pong, other).call_back(back))

    async def me_again(self) -> int:
        return int(await self.node.ref(Ping, self.key).hit())

    async def hit(self) -> int:
        self.hits += 1
        return self.hits

    @phx.reentrant
    async def via_reentrant(self, other: str) -> int:
        return int(await self.node.ref(Pong, other).call_back(self.key))


class Pong(phx.Agent, kind="tests.reentrancy.pong"):
    async def call_back(self, ping: str) -> int:
        return int(await self.node.ref(Ping, ping).hit())


class Ledger(phx.Agent, kind="tests.reentrancy.ledger", reentrant=True):
    """Every method reentrant: messages interleave at awaits."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.total = 0

    async def slow(self, gate: str) -> list[str]:
        self.log.append("slow started")
        self.total += 1  # before the await: committed by whoever finishes first
        await GATES[gate].wait()
        self.log.append("slow done")
        return self.log

    async def quick(self) -> list[str]:
        self.log.append("quick")
        return self.log

    async def fail(self) -> None:
        self.log.append("failed")
        raise ValueError("no")

    async def read(self) -> list[Any]:
        return [self.log, self.total]


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    yield from shared_cluster(2)


async def key_on(node: phx.Node, kind: type[phx.Agent], owner: str, prefix: str) -> str:
    for i in range(1000):
        key = f"{prefix}{i}"
        if await node.where(node.ref(kind, key)) == owner:
            return key
    raise AssertionError(f"no key of 1000 lives on {owner}")


@pytest.mark.parametrize("where", ["one node", "two nodes"])
def test_a_call_cycle_fails_at_once_naming_the_chain(shared: Shared, where: str) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1, n2 = cluster.nodes
        ping = await key_on(n1, Ping, "n1", f"cycle-{where}-")
        pong = await key_on(n1, Pong, "n1" if where == "one node" else "n2", f"pong-{where}-")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(phx.CallCycle) as caught:
            await n2.ref(Ping, ping).via(pong, ping)
        # at once, not at the call timeout (virtual time)
        assert loop.time() - started < n1.settings.call_timeout_s / 10
        chain = f"tests.reentrancy.ping/{ping} -> tests.reentrancy.pong/{pong} -> " \
                f"tests.reentrancy.ping/{ping}"
        assert chain in caught.value.message
        assert caught.value.definite
        assert await n1.ref(Ping, ping).hit() == 1  # nothing ran, nothing is stuck

    shared.run(main)


def test_an_agent_calling_itself_fails_at_once(shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        with pytest.raises(phx.CallCycle, match=r"ping/self -> tests\.reentrancy\.ping/self"):
            await n1.ref(Ping, "self").me_again()

    shared.run(main)


@pytest.mark.parametrize("where", ["one node", "two nodes"])
def test_a_reentrant_method_lets_the_call_back_in(shared: Shared, where: str) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        ping = await key_on(n1, Ping, "n1", f"re-{where}-")
        pong = await key_on(n1, Pong, "n1" if where == "one node" else "n2", f"rp-{where}-")
        assert await n1.ref(Ping, ping).via_reentrant(pong) == 1
        assert await n1.ref(Ping, ping).hit() == 2  # the call back's change was kept

    shared.run(main)


def test_a_reentrant_kind_handles_other_messages_while_a_handler_waits(
        shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        ledger = n1.ref(Ledger, "interleave")
        GATES["interleave"] = asyncio.Event()
        slow = asyncio.ensure_future(ledger.slow("interleave"))
        await asyncio.sleep(0.1)
        # The slow handler waits; the next message does not wait for it.
        assert await ledger.quick() == ["slow started", "quick"]
        GATES["interleave"].set()
        assert await slow == ["slow started", "quick", "slow done"]
        assert await ledger.read() == [["slow started", "quick", "slow done"], 1]

    shared.run(main)


def test_a_failure_while_a_reentrant_handler_waits_rolls_back_to_the_last_commit(
        shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        ledger = n1.ref(Ledger, "rollback")
        GATES["rollback"] = asyncio.Event()
        slow = asyncio.ensure_future(ledger.slow("rollback"))
        await asyncio.sleep(0.1)
        with pytest.raises(phx.AgentError):
            await ledger.fail()
        # The rollback to the last commit undid the waiting handler's change too
        # (documented): only what slow does after its await remains.
        GATES["rollback"].set()
        assert await slow == ["slow done"]
        assert await ledger.read() == [["slow done"], 0]

    shared.run(main)


def test_a_malformed_chain_header_is_refused_with_a_typed_error(shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_on(n1, Ping, "n1", "header-")
        probe = cluster.wire_client("probe-chain")
        conn = await probe.connect(n1.address or "")
        for bad in ("not json", '[["k"]]', '[["k","key",7]]', "{}"):
            call = Call(request_id=4242 + len(bad), kind="tests.reentrancy.ping", key=key,
                        method="hit", payload=encode_payload([[], {}]), timeout_ms=5000,
                        headers={CHAIN_HEADER: bad})
            answer = await conn.request(call, 5.0)
            assert isinstance(answer, Error), answer
            assert answer.code == "serialization_error" and answer.definite
            assert "malformed phx-chain header" in answer.message
        assert await n1.ref(Ping, key).hit() == 1  # none of them ran; the node serves on
        await probe.aclose()

    shared.run(main)
