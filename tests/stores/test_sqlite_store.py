"""Kinds with ``store=`` on a SQLite state store: commits, restarts, conflicts, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import phoenix_cluster as phx
from phoenix_cluster._agents.kinds import kind_spec


class Wallet(phx.Agent, kind="test-stores.wallet", store="main"):
    def __init__(self) -> None:
        self.balance = 0

    async def add(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    async def fail_after(self, amount: int) -> int:
        self.balance += amount
        raise RuntimeError("boom")

    async def get(self) -> int:
        return self.balance


def _url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state.db'}"


async def test_state_survives_a_restart_of_the_node(tmp_path: Path) -> None:
    async with phx.Node(stores={"main": _url(tmp_path)}) as node:
        assert await node.ref(Wallet, "a").add(5) == 5
        assert await node.ref(Wallet, "a").add(2) == 7
        with pytest.raises(phx.AgentError):
            await node.ref(Wallet, "a").fail_after(100)  # rolled back, never stored
    async with phx.Node(stores={"main": _url(tmp_path)}) as node:
        assert await node.ref(Wallet, "a").get() == 7
        assert await node.ref(Wallet, "b").get() == 0
    row = await phx.SqliteStore(tmp_path / "state.db").read("test-stores.wallet", "a")
    assert row is not None and row.version == 2 and row.state_version == 1


async def test_two_activations_of_one_key_never_both_commit(tmp_path: Path) -> None:
    """Two nodes sharing the file each activate the same agent (as two sides of a
    partition would); the second writer from the same version loses."""
    async with (phx.Node(stores={"main": _url(tmp_path)}) as one,
                phx.Node(stores={"main": _url(tmp_path)}) as two):
        assert await one.ref(Wallet, "k").add(1) == 1
        assert await two.ref(Wallet, "k").add(10) == 11  # activates from version 1
        # one's activation read version 0 then wrote 1; two has written 2 since.
        with pytest.raises(phx.WriteConflict) as info:
            await one.ref(Wallet, "k").add(100)
        assert info.value.definite is True
        # The loser stopped its activation: its next call reloads and commits.
        assert await one.ref(Wallet, "k").add(100) == 111
    row = await phx.SqliteStore(tmp_path / "state.db").read("test-stores.wallet", "k")
    assert row is not None and row.version == 3


async def test_concurrent_writers_from_the_same_version(tmp_path: Path) -> None:
    store = phx.SqliteStore(tmp_path / "s.db")
    try:
        results = await asyncio.gather(
            *(store.write("k", "x", bytes([i]), state_version=1, expected=0) for i in range(5)),
            return_exceptions=True)
        assert sum(1 for r in results if r == 1) == 1
        assert sum(isinstance(r, phx.WriteConflict) for r in results) == 4
    finally:
        await store.aclose()


async def test_a_kind_whose_store_the_node_does_not_map_fails_clearly() -> None:
    async with phx.Node() as node:
        with pytest.raises(phx.ConfigError, match="store 'main', which this node does not map"):
            await node.ref(Wallet, "a").add(1)


def test_bad_store_urls_are_config_errors() -> None:
    with pytest.raises(phx.ConfigError, match="expected sqlite:///PATH"):
        phx.Node(stores={"main": "mysql://x"})
    with pytest.raises(phx.ConfigError, match="needs a file path"):
        phx.Node(stores={"main": "sqlite://"})


def test_store_passwords_never_show_in_settings() -> None:
    node = phx.Node(stores={"pg": "postgresql://app:s3cret@db.example:5432/phx"})
    assert "s3cret" not in repr(node.settings)
    assert "postgresql://app:***@db.example:5432/phx" in repr(node.settings)


def test_bad_kind_keywords() -> None:
    with pytest.raises(phx.ConfigError, match="state_version must be an int from 1"):
        class Bad(phx.Agent, kind="test-stores.bad", state_version=0):
            pass
    with pytest.raises(phx.ConfigError, match="crdt kind"):
        class Bad2(phx.Agent, kind="test-stores.bad2", store="main", consistency="crdt"):
            pass


async def test_an_unavailable_store_fails_definite_and_writes_nothing(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's directory should be")
    async with phx.Node(stores={"main": f"sqlite://{blocked / 'state.db'}"}) as node:
        with pytest.raises(phx.StoreUnavailable) as info:
            await node.ref(Wallet, "a").add(1)
        assert info.value.definite is True


def test_kind_spec_records_the_store() -> None:
    spec = kind_spec(Wallet)
    assert (spec.store, spec.state_version, spec.snapshot_every) == ("main", 1, 0)


async def test_passivation_forgets_the_version_and_reactivation_reads_the_store(
        tmp_path: Path) -> None:
    async with (phx.Node(stores={"main": _url(tmp_path)}) as one,
                phx.Node(stores={"main": _url(tmp_path)}) as two):
        assert await one.ref(Wallet, "p").add(1) == 1
        stored = one._runtime.state.stored
        assert stored._versions == {("test-stores.wallet", "p"): 1}
        active = one._runtime.activation(Wallet._phx_spec, "p")
        assert active is not None
        one._runtime.passivate(active, reason="test")
        assert stored._versions == {}  # nothing kept for agents not active here
        assert await two.ref(Wallet, "p").add(10) == 11
        # one's passivated copy (balance 1) is older than the store: the store wins.
        assert await one.ref(Wallet, "p").add(100) == 111
