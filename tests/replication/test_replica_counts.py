"""Per-kind replica counts (``replicas=`` 1 to 5) on an in-process network.

Each count is its own replication group per partition (``_replication/groups.py``): the
first N members of the partition's set in a table built 5 wide, with quorum
``N // 2 + 1``. Virtual time (:class:`SimClock`), as in ``test_replication_service.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import lru_cache

import msgspec
import pytest

from phoenix_cluster._agents import handoff
from phoenix_cluster._replication.export import (
    BackupService,
    CountsReply,
    CountsRequest,
    ExportedRecord,
    ExportPage,
    ExportRequest,
    KindStatus,
    RestoredRecord,
    RestoreRequest,
)
from phoenix_cluster._replication.groups import (
    GROUPS,
    REPLICA_COUNTS,
    GroupTable,
    group_of,
    partition_of_group,
    replicas_of_group,
)
from phoenix_cluster._replication.service import (
    ReplicationSettings,
    group_for,
    partition_for,
)
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock
from phoenix_cluster._replication.simulation import table_of as build_table
from phoenix_cluster._replication.types import Record
from phoenix_cluster._ring.partitions import PartitionTable
from phoenix_cluster.errors import NoQuorum, ProtocolError

KIND = "counter"
LAZY = ReplicationSettings(eager=False)


@lru_cache
def table_of(members: str, replicas: int = 3) -> PartitionTable:
    """The table of ``members`` (built once: a build walks the ring 4,096 times)."""
    return build_table(sorted(members), replicas)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., ReplicaCluster]]:
    made: list[ReplicaCluster] = []

    def factory(**kw: object) -> ReplicaCluster:
        kw.setdefault("settings", LAZY)
        kw.setdefault("replicas", 5)  # as the node builds it
        cluster = ReplicaCluster(SimClock(), **kw)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        await cluster.aclose()


def primary(cluster: ReplicaCluster, key: str) -> str:
    return table_of("".join(cluster.alive)).owner(partition_for(KIND, key))


def holders(cluster: ReplicaCluster, key: str, replicas: int) -> set[str]:
    g = group_for(KIND, key, replicas)
    return {n for n, r in cluster.nodes.items() if r.store.get(g, KIND, key) is not None}


async def write(cluster: ReplicaCluster, key: str, value: str, replicas: int) -> None:
    rep = cluster.nodes[primary(cluster, key)]
    await rep.load(KIND, key, replicas)
    await rep.commit(KIND, key, Record(value.encode()), "quorum", replicas)


async def read(cluster: ReplicaCluster, key: str, replicas: int) -> str | None:
    got = await cluster.nodes[primary(cluster, key)].load(KIND, key, replicas)
    return None if got is None else got.state.decode()


async def settle(cluster: ReplicaCluster) -> None:
    """Let the accepts still on their way land (virtual time)."""
    await cluster.clock.sleep(1.0)


def test_groups_number_the_default_count_as_the_partitions() -> None:
    assert [group_of(7, 3), group_of(7, 1), group_of(7, 5)] == [7, 4096 + 7, 4 * 4096 + 7]
    for n in REPLICA_COUNTS:
        g = group_of(4095, n)
        assert g < GROUPS and partition_of_group(g) == 4095 and replicas_of_group(g) == n
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"replicas must be one of 1\.\.5"):
            group_of(0, bad)
    wide = GroupTable(table_of("abcdef", 5))
    for p in range(0, 4096, 97):
        for n in REPLICA_COUNTS:  # the first N of the wide set: what a table of N holds
            assert wide.members(group_of(p, n)) == table_of("abcdef", n).replicas[p]
    small = GroupTable(table_of("abc", 5))  # capped by the cluster's size
    assert {len(small.members(group_of(p, 5))) for p in range(4096)} == {3}
    assert {len(small.members(group_of(p, 1))) for p in range(4096)} == {1}


async def test_the_default_count_keeps_three_replicas_in_a_five_wide_table(
        make: Callable[..., ReplicaCluster]) -> None:
    """Kinds that do not set ``replicas=`` behave as before per-kind counts: their
    records live in the partition itself (same numbers on the wire and on disk), on the
    three members of a 3-wide table, with a quorum of two."""
    cluster = make()
    await cluster.start_all("abcde")
    keys = [f"k{i}" for i in range(40)]
    for key in keys:
        await write(cluster, key, f"v-{key}", 3)
    await settle(cluster)
    three = table_of("abcde", 3)
    for key in keys:
        p = partition_for(KIND, key)
        assert group_for(KIND, key) == p
        assert holders(cluster, key, 3) == set(three.replica_set(p))
    key = keys[0]
    leader = primary(cluster, key)
    others = [m for m in three.replica_set(partition_for(KIND, key)) if m != leader]
    await cluster.kill(others[0])  # one of three: a quorum of two is left
    await cluster.nodes[leader].commit(KIND, key, Record(b"w1"))
    await cluster.kill(others[1])
    with pytest.raises(NoQuorum, match="1 of"):
        await cluster.nodes[leader].commit(KIND, key, Record(b"w2"))


async def test_five_replicas_commit_on_three_and_tolerate_two_down(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abcde")
    key = "five"
    await write(cluster, key, "v1", 5)
    await settle(cluster)
    assert holders(cluster, key, 5) == set("abcde")
    assert holders(cluster, key, 3) == set()  # another group: the kind's count decides
    leader = primary(cluster, key)
    others = sorted(set("abcde") - {leader})
    for name in others[:2]:  # before membership notices: 3 of 5 still answer
        await cluster.kill(name)
    rep = cluster.nodes[leader]
    await rep.commit(KIND, key, Record(b"v2"), "quorum", 5)
    await cluster.kill(others[2])
    with pytest.raises(NoQuorum, match=r"replicas=5\): \d of \['a', 'b', 'c', 'd', 'e'\]"
                       ) as info:
        await rep.commit(KIND, key, Record(b"v3"), "quorum", 5)
    assert not info.value.definite  # the leader stored it


async def test_five_replicas_lose_nothing_when_four_die_one_after_another(
        make: Callable[..., ReplicaCluster]) -> None:
    """kill replicas-1 = 4 of 5 replicas, one at a time, membership noticing each death
    (which re-forms the group on the survivors: capped by cluster size, its leader
    copies every record to them) before the next. The last survivor's group was the
    pair {survivor, victim}: a majority of two is both, so it serves once the cluster
    counts the dead member lost (a split-brain decision downed it; replication.md,
    "Lost members"), and holds every acknowledged write."""
    cluster = make()
    await cluster.start_all("abcde")
    keys = [f"k{i}" for i in range(30)]
    for key in keys:
        await write(cluster, key, f"v-{key}", 5)
    for victim in "abcd":
        await cluster.kill(victim)
        cluster.update()
        if len(cluster.alive) == 1:
            cluster.nodes["e"].members_lost([victim], after_s=0.0)
        for key in keys:  # served by the new primaries, which re-replicate first
            assert await read(cluster, key, 5) == f"v-{key}"
        await settle(cluster)
        for key in keys:
            assert holders(cluster, key, 5) == set(cluster.alive)
    for key in keys:
        await write(cluster, key, f"w-{key}", 5)
        assert await read(cluster, key, 5) == f"w-{key}"


async def test_two_replicas_need_both_to_write_and_survive_one_loss(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    key = "two"
    await write(cluster, key, "v1", 2)
    await settle(cluster)
    pair = table_of("abc", 2).replica_set(partition_for(KIND, key))
    assert holders(cluster, key, 2) == set(pair)
    leader, other = pair
    await cluster.kill(other)
    with pytest.raises(NoQuorum, match=r"1 of \["):
        await cluster.nodes[leader].commit(KIND, key, Record(b"v2"), "quorum", 2)
    cluster.update()
    with pytest.raises(NoQuorum):  # its only other copy may hold writes it lacks
        await read(cluster, key, 2)
    cluster.nodes[leader].members_lost([other], after_s=0.0)
    # v2 reached only the leader (not acknowledged): either outcome is allowed.
    assert await read(cluster, key, 2) in ("v1", "v2")
    await write(cluster, key, "v3", 2)
    await settle(cluster)
    survivors = "".join(cluster.alive)
    assert holders(cluster, key, 2) == set(table_of(survivors, 2).replica_set(
        partition_for(KIND, key)))


async def test_one_replica_keeps_no_copy_beyond_the_owner(
        make: Callable[..., ReplicaCluster]) -> None:
    """``replicas=1``: acknowledged at once by the owner alone, stored nowhere else, and
    gone with the owner when it has no data_dir (documented)."""
    cluster = make()
    await cluster.start_all("abc")
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        await write(cluster, key, f"v-{key}", 1)
    await settle(cluster)
    for key in keys:
        assert holders(cluster, key, 1) == {primary(cluster, key)}
    victim = primary(cluster, keys[0])
    lost = [k for k in keys if primary(cluster, k) == victim]
    await cluster.kill(victim)
    cluster.update()
    for key in keys:
        assert await read(cluster, key, 1) == (None if key in lost else f"v-{key}")


def test_a_remote_load_or_commit_with_a_count_outside_1_to_5_is_malformed() -> None:
    good = handoff.decode(handoff.encode(handoff.RemoteLoad("k", "x", "n1", 5)),
                          handoff.RemoteLoad)
    assert good.replicas == 5
    old = msgspec.msgpack.encode({"kind": "k", "key": "x", "host": "n1"})
    assert handoff.decode(old, handoff.RemoteLoad).replicas == 3  # an older sender
    for bad in (0, 6):
        payload = msgspec.msgpack.encode({"kind": "k", "key": "x", "host": "n1",
                                          "replicas": bad})
        with pytest.raises(msgspec.ValidationError):
            handoff.decode(payload, handoff.RemoteLoad)


async def test_another_count_is_elected_eagerly_only_where_it_has_records(
        make: Callable[..., ReplicaCluster]) -> None:
    """Eager elections cover every partition (the default count's groups), and another
    count's groups only where the primary holds their records: after a failover the new
    primaries of the dead node's groups with records lead them without waiting for a
    call, and a count nobody wrote to costs no election."""
    cluster = make(settings=ReplicationSettings())
    await cluster.start_all("abc")

    def led(n: int) -> dict[int, str]:
        return {g: name for name, rep in cluster.nodes.items()
                for g in range(group_of(0, n), group_of(0, n) + 4096) if rep.leads(g)}

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(1000):
            if condition():
                return
            await cluster.clock.sleep(0.01)

    await until(lambda: len(led(3)) == 4096)
    assert len(led(3)) == 4096 and led(5) == {} and led(2) == {}
    keys = [f"k{i}" for i in range(30)]
    for key in keys:
        await write(cluster, key, f"v-{key}", 5)
    victim = primary(cluster, keys[0])
    moved = [k for k in keys if primary(cluster, k) == victim]
    await cluster.kill(victim)
    cluster.update()
    want = {group_for(KIND, k, 5): primary(cluster, k) for k in moved}
    await until(lambda: all(led(5).get(g) == n for g, n in want.items()))
    assert all(led(5).get(g) == n for g, n in want.items())
    assert set(led(5)) <= {group_for(KIND, k, 5) for k in keys} and led(2) == {}
    await until(lambda: not any(rep.lagging() for rep in cluster.nodes.values()))
    assert not any(rep.lagging() for rep in cluster.nodes.values())
    for key in keys:
        assert await read(cluster, key, 5) == f"v-{key}"


async def test_a_backup_reads_every_count_and_a_restore_writes_the_kinds_count(
        make: Callable[..., ReplicaCluster]) -> None:
    source = make()
    await source.start_all("abc")
    keys = [f"k{i}" for i in range(40)]
    for key in keys:
        await write(source, key, f"five-{key}", 5)
        await write(source, f"d{key}", f"three-{key}", 3)

    def status(kind: str) -> KindStatus:
        return "ok"

    exported: list[ExportedRecord] = []
    written = sorted({partition_for(KIND, k) for k in keys}
                     | {partition_for(KIND, f"d{k}") for k in keys})
    counts: set[int] = set()
    for name in "abc":  # as phx backup asks: which counts hold records anywhere
        svc = BackupService(source.nodes[name], status, lambda p: None)
        reply = await svc.handle("counts", msgspec.msgpack.encode(CountsRequest()))
        counts.update(msgspec.msgpack.decode(reply, type=CountsReply).counts)
    assert counts == {3, 5}
    for name in "abc":
        svc = BackupService(source.nodes[name], status, lambda p: None)
        mine = tuple(p for p in written if table_of("abc").owner(p) == name)
        request = ExportRequest(mine, max_bytes=1 << 30)  # an older client: the default
        page = msgspec.msgpack.decode(
            await svc.handle("export", msgspec.msgpack.encode(request)), type=ExportPage)
        assert {r.key[0] for r in page.records} <= {"d"}
        request = ExportRequest(mine, max_bytes=1 << 30, counts=tuple(sorted(counts)))
        page = msgspec.msgpack.decode(
            await svc.handle("export", msgspec.msgpack.encode(request)), type=ExportPage)
        assert page.done == len(mine)
        exported.extend(page.records)
    with pytest.raises(ProtocolError, match="no replica count 6"):
        await svc.handle("export", msgspec.msgpack.encode(ExportRequest(mine, counts=(6,))))
    assert sorted((r.key, r.state) for r in exported) == sorted(
        [(k, f"five-{k}".encode()) for k in keys]
        + [(f"d{k}", f"three-{k}".encode()) for k in keys])

    target = make()
    await target.start_all("xyz")
    records = tuple(RestoredRecord(r.kind, r.key, r.state) for r in exported
                    if r.key.startswith("k"))
    by_owner: dict[str, list[RestoredRecord]] = {}
    for record in records:
        owner = table_of("xyz").owner(partition_for(record.kind, record.key))
        by_owner.setdefault(owner, []).append(record)
    for owner, batch in by_owner.items():
        svc = BackupService(target.nodes[owner], status, lambda p: None, lambda kind: 5)
        await svc.handle("restore", msgspec.msgpack.encode(RestoreRequest(tuple(batch))))
    for key in keys:
        assert await read(target, key, 5) == f"five-{key}"
        assert await read(target, key, 3) is None  # the count's own group, not the default
