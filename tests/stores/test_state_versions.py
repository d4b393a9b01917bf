"""State versions: state written by an older release is upgraded by the kind's hook,
or refused with ``StateVersionError``; newer state than the code knows is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import phoenix_cluster as phx
from phoenix_cluster._agents.kinds import kind_spec
from phoenix_cluster._agents.versions import tag_state, untag_state
from phoenix_cluster._replication.types import Record
from phoenix_cluster.testing.memory import MemoryCluster

_encode = msgspec.msgpack.encode


class ProfileV2(phx.Agent, kind="test-versions.profile", store="main", state_version=2):
    def __init__(self) -> None:
        self.first = ""
        self.last = ""

    @classmethod
    def upgrade_state(cls, old_version: int, state: dict[str, Any]) -> dict[str, Any]:
        assert old_version == 1
        first, _, last = state.pop("name").partition(" ")
        return {**state, "first": first, "last": last}

    async def get(self) -> list[str]:
        return [self.first, self.last]

    async def rename(self, first: str) -> None:
        self.first = first


class NoHook(phx.Agent, kind="test-versions.nohook", store="main", state_version=3):
    async def get(self) -> int:
        return 0


async def test_a_store_row_of_an_older_version_is_upgraded_and_written_back(
        tmp_path: Path) -> None:
    store = phx.SqliteStore(tmp_path / "s.db")
    old = _encode(Record(_encode({"name": "Ada Lovelace"})))
    await store.write("test-versions.profile", "ada", old, state_version=1, expected=0)
    async with phx.Node(stores={"main": store}) as node:
        assert await node.ref(ProfileV2, "ada").get() == ["Ada", "Lovelace"]
        await node.ref(ProfileV2, "ada").rename("Augusta")
    reopened = phx.SqliteStore(tmp_path / "s.db")
    row = await reopened.read("test-versions.profile", "ada")
    await reopened.aclose()
    assert row is not None and (row.version, row.state_version) == (2, 2)


async def test_older_without_a_hook_and_newer_than_the_code_are_refused(
        tmp_path: Path) -> None:
    store = phx.SqliteStore(tmp_path / "s.db")
    await store.write("test-versions.nohook", "a", _encode(Record(_encode({}))),
                      state_version=2, expected=0)
    await store.write("test-versions.profile", "future", _encode(Record(_encode({}))),
                      state_version=7, expected=0)
    async with phx.Node(stores={"main": store}) as node:
        with pytest.raises(phx.StateVersionError, match="defines no upgrade_state"):
            await node.ref(NoHook, "a").get()
        with pytest.raises(phx.StateVersionError, match="state_version 7, newer than"):
            await node.ref(ProfileV2, "future").get()
    # Nothing was written over either row.
    reopened = phx.SqliteStore(tmp_path / "s.db")
    stored = await reopened.read("test-versions.profile", "future")
    assert stored is not None and stored.version == 1
    await reopened.aclose()


def test_replica_state_tags_round_trip_and_untagged_state_is_version_1() -> None:
    spec = kind_spec(ProfileV2)
    state = _encode({"first": "a"})
    assert untag_state(state) == (1, state)
    assert untag_state(tag_state(spec, state)) == (2, state)
    for version in (1, 127, 128, 300, 70000):
        tagged = b"\xc1" + _encode(version) + state
        assert untag_state(tagged) == (version, state)


class Replicated(phx.Agent, kind="test-versions.replicated", state_version=2):
    def __init__(self) -> None:
        self.items: list[str] = []

    @classmethod
    def upgrade_state(cls, old_version: int, state: dict[str, Any]) -> dict[str, Any]:
        return {"items": [state["item"]]}

    async def get(self) -> list[str]:
        return self.items


async def test_replicas_holding_an_older_version_are_upgraded_on_activation() -> None:
    async with MemoryCluster(1) as cluster:
        node = cluster.nodes[0]
        ref = node.ref(Replicated, "r")
        await ref.get()  # activate on its home, then plant a version-1 record there
        home = next(n for n in cluster.nodes
                    if n._runtime.activation(kind_spec(Replicated), "r") is not None)
        spec = kind_spec(Replicated)
        await home._runtime.state.commit(
            _v1(spec), "r", Record(_encode({"item": "x"})), "")
        active = home._runtime.activation(spec, "r")
        assert active is not None
        home._runtime.passivate(active, reason="test")
        home._runtime.kind(spec).passive.clear()
        assert await ref.get() == ["x"]


def _v1(spec: Any) -> Any:
    """The spec as the previous release (state_version 1) had it."""
    import copy
    old = copy.copy(spec)
    old.state_version = 1
    return old


class DurableV1(phx.Agent, kind="test-versions.durable"):
    def __init__(self) -> None:
        self.item = ""

    async def put(self, item: str) -> None:
        self.item = item


async def test_data_dir_state_of_the_previous_release_is_upgraded(tmp_path: Path) -> None:
    """Release 1 commits to a single member with a data_dir; the member restarts under
    release 2 (state_version 2), which reads the file's state through upgrade_state."""
    async with MemoryCluster(1, data_dir=str(tmp_path)) as cluster:
        await cluster.nodes[0].ref(DurableV1, "d").put("x")

    class DurableV2(phx.Agent, kind="test-versions.durable", state_version=2):
        def __init__(self) -> None:
            self.items: list[str] = []

        @classmethod
        def upgrade_state(cls, old_version: int, state: dict[str, Any]) -> dict[str, Any]:
            return {"items": [state["item"]]}

        async def get(self) -> list[str]:
            return self.items

    try:
        # A restart: another seed, so its request ids are not the first life's (which
        # the reply window committed with "x" remembers), as a real node's are not.
        async with MemoryCluster(1, data_dir=str(tmp_path), seed=1) as cluster:
            assert await cluster.nodes[0].ref(DurableV2, "d").get() == ["x"]
    finally:
        _restore_kind(DurableV1)  # the kind name goes back to release 1's class


def _restore_kind(cls: type[phx.Agent]) -> None:
    from phoenix_cluster._agents.kinds import _KINDS
    _KINDS[cls._phx_spec.name] = cls._phx_spec
