"""The partition table: fixed partitions, replica sets from the ring, moves between versions."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._ring.hashing import HASH_SPACE, key_hash
from phoenix_cluster._ring.partitions import (
    PARTITIONS,
    PartitionMove,
    PartitionTable,
    partition_of,
    partition_point,
)
from phoenix_cluster._ring.ring import EmptyRing, HashRing

names = st.text(min_size=1, max_size=10)


def test_partition_of_reads_the_top_12_bits() -> None:
    assert PARTITIONS == 4096
    assert partition_of(0) == 0
    assert partition_of(HASH_SPACE - 1) == PARTITIONS - 1
    assert partition_of(1 << 52) == 1
    assert partition_of((1 << 52) - 1) == 0
    assert partition_of(key_hash("counter", "alice")) == 0xE8D  # golden: fixed for life
    with pytest.raises(ValueError, match="outside"):
        partition_of(HASH_SPACE)
    with pytest.raises(ValueError, match="outside"):
        partition_of(-1)


@given(st.integers(0, PARTITIONS - 1))
def test_partition_point_starts_its_slice(p: int) -> None:
    point = partition_point(p)
    assert point == p * 2**64 // PARTITIONS
    assert partition_of(point) == p
    assert partition_of(point - 1 if p else HASH_SPACE - 1) == (p - 1) % PARTITIONS


def test_partition_point_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"outside \[0, 4096\)"):
        partition_point(PARTITIONS)


@settings(max_examples=15, deadline=None)
@given(st.lists(names, min_size=1, max_size=12, unique=True), st.integers(1, 5))
def test_build_takes_the_rings_replicas_of_each_partition_point(members: list[str], n: int) -> None:
    ring = HashRing(members, vnodes=40, version=9)
    table = PartitionTable.build(ring, n_replicas=n)
    assert table.version == 9
    assert len(table.replicas) == PARTITIONS
    for p in range(0, PARTITIONS, 7):
        reps = table.replica_set(p)
        assert list(reps) == ring.replicas(partition_point(p), n)
        assert table.owner(p) == reps[0] == ring.owner(partition_point(p))
        assert len(reps) == min(n, len(members)) == len(set(reps))
    assert table.members() <= set(members)


def test_build_defaults_and_errors() -> None:
    ring = HashRing(["a", "b", "c", "d"], version=5)
    table = PartitionTable.build(ring)
    assert {len(s) for s in table.replicas} == {3}
    assert PartitionTable.build(ring, version=77).version == 77
    # Equal sets share one tuple (memory), and the table round-trips through msgpack.
    assert len({id(s) for s in table.replicas}) == len(set(table.replicas))
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(table), type=PartitionTable)
    assert decoded == table
    with pytest.raises(EmptyRing):
        PartitionTable.build(HashRing())
    with pytest.raises(ValueError, match="replica count"):
        PartitionTable.build(ring, n_replicas=0)
    with pytest.raises(ValueError, match="outside"):
        table.owner(-1)
    with pytest.raises(ValueError, match="outside"):
        table.replica_set(PARTITIONS)


def test_malformed_tables_are_rejected_even_from_the_wire() -> None:
    with pytest.raises(ValueError, match="has 3 replica sets, expected 4,096"):
        PartitionTable(version=1, replicas=(("a",),) * 3)
    with pytest.raises(ValueError, match="expected one or more distinct members"):
        PartitionTable(version=1, replicas=(("a", "a"),) * PARTITIONS)
    with pytest.raises(ValueError, match="expected one or more distinct members"):
        PartitionTable(version=1, replicas=((),) * PARTITIONS)
    raw = msgspec.msgpack.encode({"version": 1, "replicas": [["a"]] * 10})
    with pytest.raises(msgspec.ValidationError, match="4,096"):
        msgspec.msgpack.decode(raw, type=PartitionTable)


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=1, max_size=30, unique=True), names)
def test_join_moves_only_partitions_the_joiner_enters(members: list[str], joiner: str) -> None:
    if joiner in members:
        members.remove(joiner)
    if not members:
        return
    ring = HashRing(members)
    old = PartitionTable.build(ring)
    new = PartitionTable.build(ring.with_member(joiner))
    moves = old.moves(new)
    assert new.version == old.version + 1
    assert all(isinstance(m, PartitionMove) for m in moves)
    assert [m.partition for m in moves] == sorted(m.partition for m in moves)
    for p, before, after in moves:
        assert joiner in after and before == old.replica_set(p)
        rest = tuple(m for m in after if m != joiner)
        assert rest == before[: len(rest)]  # the others keep their order
    changed = {m.partition for m in moves}
    for p in range(PARTITIONS):
        if p not in changed:
            assert joiner not in new.replica_set(p)
    assert old.moves(old) == []


def test_join_at_100_members_moves_about_3_in_101_partitions() -> None:
    ring = HashRing(f"node-{i}" for i in range(100))
    old = PartitionTable.build(ring)
    moves = old.moves(PartitionTable.build(ring.with_member("newcomer")))
    expected = 3 * PARTITIONS / 101  # the joiner enters ~3/(n+1) of the replica sets
    assert 0.5 * expected < len(moves) < 1.6 * expected
    primaries = sum(m.new[0] == "newcomer" for m in moves)
    assert 0.3 * PARTITIONS / 101 < primaries < 2.0 * PARTITIONS / 101


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=2, max_size=30, unique=True), st.data())
def test_leave_moves_only_partitions_the_leaver_held(
    members: list[str], data: st.DataObject
) -> None:
    leaver = data.draw(st.sampled_from(members))
    ring = HashRing(members)
    old = PartitionTable.build(ring)
    new = PartitionTable.build(ring.without_member(leaver))
    moves = old.moves(new)
    for _, before, after in moves:
        assert leaver in before and leaver not in after
    held = sum(leaver in s for s in old.replicas)
    assert len(moves) == held


def test_statistics() -> None:
    table = PartitionTable.build(HashRing([f"node-{i}" for i in range(10)], version=2))
    stats = table.statistics()
    assert (stats.version, stats.partitions, stats.members, stats.replication) == (
        2,
        PARTITIONS,
        10,
        3,
    )
    assert stats.min_primaries <= PARTITIONS / 10 <= stats.max_primaries
    assert stats.primary_max_over_mean == stats.max_primaries * 10 / PARTITIONS
    assert 1.0 <= stats.replica_max_over_mean <= stats.primary_max_over_mean + 0.5
