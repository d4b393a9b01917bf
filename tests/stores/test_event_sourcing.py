"""Event-sourced agents on a SQLite store: persist, apply, snapshots, replay, conflicts."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import phoenix_cluster as phx


class Deposited(msgspec.Struct, tag=True):
    amount: int


class Withdrawn(msgspec.Struct, tag=True):
    amount: int


class Account(phx.EventSourcedAgent, kind="test-es.account", store="main", snapshot_every=3):
    def __init__(self) -> None:
        self.balance = 0
        self.history: list[int] = []

    def apply(self, event: Deposited | Withdrawn) -> None:
        delta = event.amount if isinstance(event, Deposited) else -event.amount
        self.balance += delta
        self.history.append(delta)

    async def deposit(self, amount: int) -> int:
        self.persist(Deposited(amount))
        return self.balance

    async def withdraw(self, amount: int) -> int:
        self.persist(Withdrawn(amount))
        if self.balance < 0:
            raise ValueError("insufficient funds")  # the event is dropped with the state
        return self.balance

    async def get(self) -> list[int]:
        return [self.balance, *self.history]


async def test_events_replay_after_a_restart_from_the_newest_snapshot(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'es.db'}"
    async with phx.Node(stores={"main": url}) as node:
        acct = node.ref(Account, "a")
        for amount in (10, 20, 30, 40):
            await acct.deposit(amount)
        with pytest.raises(phx.AgentError, match="insufficient"):
            await acct.withdraw(1000)
        assert await acct.withdraw(5) == 95
    store = phx.SqliteStore(tmp_path / "es.db")
    stored = await store.read_events("test-es.account", "a")
    await store.aclose()
    # 5 events: a snapshot at event 3, events 4 and 5 after it; the failed one is gone.
    assert stored.snapshot is not None and stored.snapshot.version == 3
    assert len(stored.events) == 2 and stored.version == 5
    async with phx.Node(stores={"main": url}) as node:
        assert await node.ref(Account, "a").get() == [95, 10, 20, 30, 40, -5]
        assert await node.ref(Account, "a").deposit(1) == 96


async def test_two_activations_never_both_append(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'es.db'}"
    async with (phx.Node(stores={"main": url}) as one, phx.Node(stores={"main": url}) as two):
        await one.ref(Account, "k").deposit(1)
        await two.ref(Account, "k").deposit(2)
        with pytest.raises(phx.WriteConflict):
            await one.ref(Account, "k").deposit(4)
        assert await one.ref(Account, "k").deposit(8) == 11


def test_an_event_sourced_kind_needs_apply_and_a_store() -> None:
    with pytest.raises(phx.ConfigError, match="needs store=NAME"):
        class NoStore(phx.EventSourcedAgent, kind="test-es.nostore"):
            def apply(self, event: int) -> None:
                pass
    with pytest.raises(phx.ConfigError, match="must define apply"):
        class NoApply(phx.EventSourcedAgent, kind="test-es.noapply", store="main"):
            pass
    assert "apply" not in Account._phx_spec.methods
    assert "persist" not in Account._phx_spec.methods


class Sloppy(phx.EventSourcedAgent, kind="test-es.sloppy", store="main"):
    def __init__(self) -> None:
        self.n = 0

    def apply(self, event: int) -> None:
        self.n += event

    async def bump(self) -> None:
        self.n += 1  # not through persist(): refused, nothing stored


async def test_a_state_change_without_persist_is_refused(tmp_path: Path) -> None:
    async with phx.Node(stores={"main": f"sqlite://{tmp_path / 'es.db'}"}) as node:
        with pytest.raises(phx.ConfigError, match="without persist"):
            await node.ref(Sloppy, "s").bump()


class Picky(phx.EventSourcedAgent, kind="test-es.picky", store="main"):
    def __init__(self) -> None:
        self.n = 0

    def apply(self, event: int) -> None:
        if event < 0:
            raise ValueError(f"cannot apply {event}")
        self.n += event

    async def get(self) -> int:
        return self.n


async def test_an_event_that_does_not_apply_fails_the_activation_clearly(
        tmp_path: Path) -> None:
    store = phx.SqliteStore(tmp_path / "es.db")
    await store.append("test-es.picky", "bad", [msgspec.msgpack.encode(-1)], expected=0)
    await store.append("test-es.picky", "good", [msgspec.msgpack.encode(2)], expected=0)
    async with phx.Node(stores={"main": store}) as node:
        with pytest.raises(phx.AgentError, match=r"replay of test-es\.picky/bad"):
            await node.ref(Picky, "bad").get()
        assert await node.ref(Picky, "good").get() == 2  # the node keeps serving
