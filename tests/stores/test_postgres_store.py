"""Kinds with ``store=`` on a real PostgreSQL server (started by ``conftest.py``):
commits, restarts, forced double activations, the database going down and coming back."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import pytest

import phoenix_cluster as phx
from phoenix_cluster.testing.postgres import PostgresServer

_names = itertools.count()


class Ledger(phx.Agent, kind="test-pg.ledger", store="pg"):
    def __init__(self) -> None:
        self.entries: list[int] = []

    async def add(self, amount: int) -> int:
        self.entries.append(amount)
        return sum(self.entries)

    async def get(self) -> list[int]:
        return self.entries


class Added(msgspec.Struct):
    amount: int


class Tally(phx.EventSourcedAgent, kind="test-pg.tally", store="pg", snapshot_every=4):
    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def apply(self, event: Added) -> None:
        self.total += event.amount
        self.count += 1

    async def add(self, amount: int) -> int:
        self.persist(Added(amount))
        return self.total

    async def get(self) -> list[int]:
        return [self.total, self.count]


def _key() -> str:
    return f"k{next(_names)}"


async def test_state_survives_a_restart_and_two_activations_never_both_commit(
        postgres: PostgresServer) -> None:
    key = _key()
    async with (phx.Node(stores={"pg": postgres.url}) as one,
                phx.Node(stores={"pg": postgres.url}) as two):
        assert await one.ref(Ledger, key).add(1) == 1
        assert await two.ref(Ledger, key).add(2) == 3  # a second activation of the key
        with pytest.raises(phx.WriteConflict) as info:
            await one.ref(Ledger, key).add(4)  # read version 1; the store holds 2
        assert info.value.definite is True
        assert await one.ref(Ledger, key).add(8) == 11  # reactivated from the store
    async with phx.Node(stores={"pg": postgres.url}) as node:
        assert await node.ref(Ledger, key).get() == [1, 2, 8]


async def test_racing_writers_from_one_version_commit_exactly_once(
        postgres: PostgresServer) -> None:
    store = phx.PostgresStore(postgres.url)
    key = _key()
    try:
        results = await asyncio.gather(
            *(store.write("race", key, bytes([i]), state_version=1, expected=0)
              for i in range(8)), return_exceptions=True)
        assert [r for r in results if not isinstance(r, phx.WriteConflict)] == [1]
        results = await asyncio.gather(
            *(store.append("race-events", key, [b"e"], expected=0) for _ in range(8)),
            return_exceptions=True)
        assert [r for r in results if not isinstance(r, phx.WriteConflict)] == [1]
    finally:
        await store.aclose()


async def test_event_sourced_replay_from_postgres(postgres: PostgresServer) -> None:
    key = _key()
    async with phx.Node(stores={"pg": postgres.url}) as node:
        for amount in range(1, 11):
            await node.ref(Tally, key).add(amount)
    store = phx.PostgresStore(postgres.url)
    stored = await store.read_events("test-pg.tally", key)
    await store.aclose()
    assert stored.snapshot is not None and stored.snapshot.version == 8
    assert len(stored.events) == 2
    async with phx.Node(stores={"pg": postgres.url}) as node:
        assert await node.ref(Tally, key).get() == [55, 10]


async def test_the_database_down_fails_calls_definite_and_they_recover(
        postgres: PostgresServer) -> None:
    key = _key()
    async with phx.Node(stores={"pg": postgres.url}, call_timeout_s=30.0) as node:
        ledger = node.ref(Ledger, key)
        assert await ledger.add(1) == 1
        postgres.stop()
        try:
            for amount in (10, 20):
                with pytest.raises(phx.StoreUnavailable) as info:
                    await ledger.add(amount)
                assert info.value.definite is True, info.value
        finally:
            postgres.start()
        # Back: the agent reloads from the store; neither failed call left anything.
        assert await ledger.add(100) == 101
        assert await ledger.get() == [1, 100]
    store = phx.PostgresStore(postgres.url)
    row = await store.read("test-pg.ledger", key)
    await store.aclose()
    assert row is not None and row.version == 2


async def test_an_unreachable_database_at_start(postgres: PostgresServer) -> None:
    url = f"postgresql://phx@127.0.0.1:{postgres.port}/no_such_database"
    async with phx.Node(stores={"pg": url}) as node:
        with pytest.raises(phx.StoreUnavailable, match="no_such_database") as info:
            await node.ref(Ledger, _key()).add(1)
        assert info.value.definite is True


def test_the_store_repr_hides_the_password() -> None:
    store = phx.PostgresStore("postgresql://app:hunter2@db:5432/x")
    assert "hunter2" not in repr(store) and "app:***@db:5432" in repr(store)
