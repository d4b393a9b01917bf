"""CRDTs as agent state and as call arguments: they survive the runtime's msgpack round
trips (snapshot, rollback, the codec on every call) with their types intact."""

from __future__ import annotations

import pytest

import phoenix_cluster as phx
from phoenix_cluster import crdt


class Cart(phx.Agent, kind="tests.crdt.cart"):
    items: crdt.ORSet[str]
    views: crdt.GCounter
    profile: crdt.ORMap[str]

    def __init__(self) -> None:
        self.items = crdt.ORSet()
        self.views = crdt.GCounter()
        self.profile = crdt.ORMap()

    async def add(self, item: str) -> crdt.ORSet[str]:
        self.views.increment(replica=self.key)
        self.profile.update("last", crdt.LWWRegister, lambda r: r.set(item, replica="n"))
        return self.items.add(item, replica=self.key)

    async def add_then_fail(self, item: str) -> None:
        self.items.add(item, replica=self.key)
        raise ValueError("refused")

    async def join(self, delta: crdt.ORSet[str]) -> list[str]:
        self.items.merge(delta)
        return sorted(self.items)

    async def read(self) -> tuple[list[str], int, dict[str, object]]:
        assert isinstance(self.items, crdt.ORSet) and isinstance(self.profile, crdt.ORMap)
        return sorted(self.items), self.views.value, self.profile.value


async def test_deltas_travel_as_call_arguments_and_results() -> None:
    async with phx.Node() as node:
        cart, other = node.ref(Cart, "c1"), node.ref(Cart, "c2")
        delta = await cart.add("apple")
        assert isinstance(delta, crdt.ORSet) and delta.value == {"apple"}
        await other.add("fig")
        assert await other.join(delta) == ["apple", "fig"]
        assert await cart.join(await other.add("kiwi")) == ["apple", "kiwi"]
        assert await cart.read() == (["apple", "kiwi"], 1, {"last": "apple"})


async def test_crdt_state_survives_rollback_typed() -> None:
    async with phx.Node() as node:
        cart = node.ref(Cart, "c1")
        await cart.add("apple")
        with pytest.raises(phx.AgentError, match="refused"):
            await cart.add_then_fail("pear")
        # Rolled back from the committed snapshot: still typed, still mergeable.
        assert await cart.read() == (["apple"], 1, {"last": "apple"})
        await cart.add("fig")
        assert (await cart.read())[0] == ["apple", "fig"]
