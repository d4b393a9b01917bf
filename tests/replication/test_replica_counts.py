"""Per-kind replica counts (``replicas=`` 1 to 5) on an in-process network.

Each count is its own replication group per partition (``_replication/groups.py``): the
first N members of the partition's set in a table built 5 wide, with quorum
``N // 2 + 1``. Virtual time (:class:`SimClock`), as in ``test_replication_service.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from phoenix_cluster._agents import handoff
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
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock, table_of
from phoenix_cluster._replication.types import Record
from phoenix_cluster.errors import NoQuorum

KIND = "counter"
LAZY = ReplicationSettings(eager=False)


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
    return table_of(cluster.alive).owner(partition_for(KIND, key))


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
    assert holders(cluster, key, 2) == set(table_of("ab" if other == "c" else "ac"
                                                    if other == "b" else "bc", 2)
                                           .replica_set(partition_for(KIND, key)))


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


async def test_a_count_is_elected_eagerly_only_once_served(
        make: Callable[..., ReplicaCluster]) -> None:
    """Eager elections cover the default's groups; another count's groups only after
    ``use_replicas`` (a ``load`` of such a kind): an unused count costs nothing."""
    cluster = make(settings=ReplicationSettings())
    await cluster.start_all("abc")
    table = GroupTable(table_of("abc", 5))

    def led(n: int) -> dict[int, str]:
        return {g: name for name, rep in cluster.nodes.items()
                for g in range(group_of(0, n), group_of(0, n) + 4096) if rep.leads(g)}

    want = {g: table.primary(g) for g in range(group_of(0, 5), group_of(0, 5) + 4096)}
    for _ in range(1000):
        if len(led(3)) == 4096:
            break
        await cluster.clock.sleep(0.01)
    assert len(led(3)) == 4096 and led(5) == {}
    assert not any(cluster.nodes[name].lagging() for name in "abc")
    for rep in cluster.nodes.values():
        rep.use_replicas(5)
    for _ in range(1000):
        if led(5) == want:
            break
        await cluster.clock.sleep(0.01)
    assert led(5) == want
    assert not any(cluster.nodes[name].lagging() for name in "abc")
