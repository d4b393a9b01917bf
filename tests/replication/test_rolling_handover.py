"""Rolling restarts on an in-process network: catching a restarted replica up before it
counts as ready, and a leaving leader handing its partitions over (replication.md,
"Rolling restarts")."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from phoenix_cluster._foundation.env import SystemClock
from phoenix_cluster._replication.service import ReplicationSettings, partition_for
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock, table_of
from phoenix_cluster._replication.types import Record
from phoenix_cluster._ring.partitions import PARTITIONS
from phoenix_cluster.errors import NotLeader

KIND = "counter"
EAGER = ReplicationSettings()
LAZY = ReplicationSettings(eager=False)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., ReplicaCluster]]:
    made: list[ReplicaCluster] = []

    def factory(**kw: object) -> ReplicaCluster:
        kw.setdefault("settings", EAGER)
        cluster = ReplicaCluster(kw.pop("clock", SimClock()), **kw)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        await cluster.aclose()


async def settle(cluster: ReplicaCluster, done: Callable[[], bool], seconds: float) -> None:
    """Advance (virtual) time until ``done()``; fail after ``seconds`` of it."""
    deadline = cluster.clock.monotonic() + seconds
    while not done():
        assert cluster.clock.monotonic() < deadline, "condition not reached in time"
        await cluster.clock.sleep(0.05)


async def write_all(cluster: ReplicaCluster, keys: list[str], value: str) -> None:
    table = table_of(cluster.alive)
    for key in keys:
        leader = cluster.nodes[table.owner(partition_for(KIND, key))]
        await leader.load(KIND, key)
        await leader.commit(KIND, key, Record(value.encode(), ()))


async def read(cluster: ReplicaCluster, key: str) -> str | None:
    owner = table_of(cluster.alive).owner(partition_for(KIND, key))
    got = await cluster.nodes[owner].load(KIND, key)
    return None if got is None else got.state.decode()


async def test_a_replica_without_a_table_lags_on_every_partition(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    a = await cluster.start("a")
    assert a.lagging() == list(range(PARTITIONS))


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "data_dir"])
async def test_a_restart_nobody_noticed_lags_until_the_primaries_catch_it_up(
        make: Callable[..., ReplicaCluster], tmp_path: Path, durable: bool) -> None:
    """Restarted under the same name before anyone saw it go: the table does not change,
    so no primary re-elects on its own. The restarted replica lags (not ready) until its
    catch-up probes made every primary catch it up, and then holds every write."""
    kw: dict[str, object] = {"data_dir": tmp_path, "clock": SystemClock()} if durable else {}
    cluster = make(**kw)
    await cluster.start_all("abc")
    await settle(cluster, lambda: not cluster.nodes["c"].lagging(), 60)
    keys = [f"k{i}" for i in range(40)]
    await write_all(cluster, keys, "v1")
    await cluster.kill("c")
    await write_all(cluster, keys, "v2")  # c misses these (a and b are a majority)
    c = await cluster.start("c")
    cluster.update()  # same members, same table
    assert len(c.lagging()) == PARTITIONS  # every partition names c in a 3-node cluster
    await settle(cluster, lambda: not c.lagging(), 60)
    for key in keys:
        entry = c.store.get(partition_for(KIND, key), KIND, key)
        assert entry is not None and entry.record.state == b"v2"
    # c alone with one other replica now serves every committed write.
    await cluster.kill("b")
    cluster.update()
    assert [await read(cluster, key) for key in keys] == ["v2"] * len(keys)


async def test_a_leaving_leader_hands_its_partitions_over_first(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make(settings=LAZY)
    await cluster.start_all("abc")
    keys = [f"k{i}" for i in range(60)]
    await write_all(cluster, keys, "v1")
    a = cluster.nodes["a"]
    led = {p for p in range(PARTITIONS) if a.leads(p)}
    assert led
    after = table_of("bc")
    handed = await a.hand_over(after, timeout_s=10.0)
    assert handed == len(led)
    assert not any(a.leads(p) for p in range(PARTITIONS))
    for p in led:  # each taken by its primary in the table without a
        assert cluster.nodes[after.owner(p)].leads(p) is not None
    # A leaving node starts no election (callers route elsewhere).
    mine = next(k for k in keys if partition_for(KIND, k) in led)
    with pytest.raises(NotLeader, match="leaving") as info:
        await a.load(KIND, mine)
    assert info.value.definite
    # Then it goes; its successors hold everything it acknowledged.
    await cluster.kill("a")
    cluster.update()
    assert [await read(cluster, key) for key in keys] == ["v1"] * len(keys)


async def test_a_leaving_leaders_late_writes_are_fenced_not_lost(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make(settings=LAZY)
    await cluster.start_all("abc")
    a = cluster.nodes["a"]
    key = next(f"k{i}" for i in range(10_000)
               if table_of("abc").owner(partition_for(KIND, f"k{i}")) == "a")
    await a.load(KIND, key)
    await a.commit(KIND, key, Record(b"before", ()))
    await a.hand_over(table_of("bc"), timeout_s=10.0)
    with pytest.raises(NotLeader) as info:
        await a.commit(KIND, key, Record(b"after", ()))
    assert info.value.definite  # nothing stored: the caller may send it again
    await cluster.kill("a")
    cluster.update()
    assert await read(cluster, key) == "before"


async def test_a_member_restarted_with_an_emptied_data_dir_is_forgetful(
        make: Callable[..., ReplicaCluster], tmp_path: Path) -> None:
    """A lost volume: the new file vouches for nothing that came before, so the member
    counts as amnesiac (like one without a data_dir) until leaders catch it up."""
    cluster = make(data_dir=tmp_path, clock=SystemClock())
    await cluster.start_all("abc")
    assert all(r.store.amnesiac for r in cluster.nodes.values())  # first start: new files
    keys = [f"k{i}" for i in range(20)]
    await write_all(cluster, keys, "v1")
    await cluster.kill("c")
    await cluster.kill("b")
    b = await cluster.start("b")  # its file is back: trusted
    assert not b.store.amnesiac
    for path in os.listdir(tmp_path):
        if path.startswith("replication-c.sqlite3"):
            os.unlink(tmp_path / path)
    c = await cluster.start("c")
    cluster.update()
    assert c.store.amnesiac
    await settle(cluster, lambda: not c.lagging(), 60)
    for key in keys:
        entry = c.store.get(partition_for(KIND, key), KIND, key)
        assert entry is not None and entry.record.state == b"v1"


async def test_a_leaving_leader_hands_over_past_a_successor_that_died(
        make: Callable[..., ReplicaCluster]) -> None:
    """``d`` dies, unnoticed, as ``a`` leaves: the partitions whose next primary is ``d``
    go to their next replica once ``a``'s membership sees ``d`` dead. Asking only ``d``
    left them led by nobody once ``a`` went, with one synced replica of the three."""
    cluster = make(settings=LAZY)
    await cluster.start_all("abcd")
    keys = [f"k{i}" for i in range(200)]
    await write_all(cluster, keys, "v1")
    a = cluster.nodes["a"]
    after = table_of("bcd")
    led = {p for p in range(PARTITIONS) if a.leads(p)}
    assert any(after.owner(p) == "d" for p in led)
    await cluster.kill("d")
    leaving = asyncio.create_task(a.hand_over(after, timeout_s=10.0))
    await cluster.clock.sleep(1.5)  # the first asks went to d
    cluster.update(view="abc")  # membership: d is dead
    assert await leaving == len(led)
    assert not any(a.leads(p) for p in range(PARTITIONS))
    await cluster.kill("a")
    cluster.update()
    assert [await read(cluster, key) for key in keys] == ["v1"] * len(keys)
