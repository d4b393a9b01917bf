"""The partition table: a fixed set of partitions, each mapped to its replica set.

Key hashes fall into ``PARTITIONS`` equal slices of the 64-bit circle; the slice of a
key never changes for the cluster's life (:func:`partition_of` reads the top 12 bits).
What changes with membership is the :class:`PartitionTable`: for each partition, the
``n_replicas`` distinct members that hold it, primary first. Partition ``p`` sits on the
ring at ``p * 2**64 // PARTITIONS`` (the start of its slice) and takes the ring's replicas
of that point, so the table inherits the ring's minimal movement: a join changes only the
partitions whose sets the new member enters.

Moving, replicating and fencing whole partitions rather than single keys keeps the
bookkeeping per node bounded (4,096 entries whatever the number of agents), like
Riak's ring partitions and Cassandra's token ranges. The table is a frozen msgspec
Struct with a version, so layers compare versions (snapshots between layers)
and :meth:`PartitionTable.moves` lists the hand-offs between two versions.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from .hashing import HASH_BITS, HASH_SPACE
from .ring import EmptyRing, HashRing

__all__ = [
    "PARTITIONS",
    "PartitionMove",
    "PartitionStatistics",
    "PartitionTable",
    "partition_of",
    "partition_point",
]

PARTITIONS = 4096
"""Number of partitions. Fixed for the cluster's life: changing it remaps every key.
4,096 gives about 41 partitions per member at 100 members and 4 at 1,000."""

_BITS = PARTITIONS.bit_length() - 1
_SHIFT = HASH_BITS - _BITS
assert 1 << _BITS == PARTITIONS, "PARTITIONS must be a power of two"


def partition_of(key_hash: int) -> int:
    """The partition a key hash falls into: its top 12 bits.

    Args:
        key_hash: an int in ``[0, 2**64)``.

    Returns:
        An int in ``[0, PARTITIONS)``.

    Raises:
        ValueError: ``key_hash`` is outside ``[0, 2**64)``.
    """
    if not 0 <= key_hash < HASH_SPACE:
        raise ValueError(f"key hash {key_hash!r} is outside [0, 2**64)")
    return key_hash >> _SHIFT


def partition_point(partition: int) -> int:
    """Where partition ``partition`` sits on the ring: the start of its slice."""
    _check_partition(partition)
    return partition * HASH_SPACE // PARTITIONS


def _check_partition(partition: int) -> None:
    if not 0 <= partition < PARTITIONS:
        raise ValueError(f"partition {partition!r} is outside [0, {PARTITIONS})")


class PartitionMove(NamedTuple):
    """One partition whose replica set differs between two tables."""

    partition: int
    old: tuple[str, ...]
    new: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    """How evenly a table spreads partitions over members.

    Attributes:
        version: the table's version.
        partitions: number of partitions (``PARTITIONS``).
        members: distinct members named in the table.
        replication: the largest replica set's size.
        min_primaries: fewest partitions any member is primary for.
        max_primaries: most partitions any member is primary for.
        primary_max_over_mean: ``max_primaries`` over the mean ``PARTITIONS / members``.
        replica_max_over_mean: the same for partitions held in any role.
    """

    version: int
    partitions: int
    members: int
    replication: int
    min_primaries: int
    max_primaries: int
    primary_max_over_mean: float
    replica_max_over_mean: float


class PartitionTable(msgspec.Struct, frozen=True):
    """Replica set of every partition, primary first, at one version.

    Attributes:
        version: the table's version (by default the ring's it was built from).
        replicas: ``replicas[p]`` is partition ``p``'s replica set: distinct member
            names, the primary first. Exactly ``PARTITIONS`` entries, none empty.

    Raises:
        ValueError: on construction or decoding, when ``replicas`` has the wrong length,
            or a set is empty or repeats a member.
    """

    version: int
    replicas: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.replicas) != PARTITIONS:
            raise ValueError(
                f"partition table has {len(self.replicas):,} replica sets, expected {PARTITIONS:,}"
            )
        for p, members in enumerate(self.replicas):
            if not members or len(set(members)) != len(members):
                raise ValueError(
                    f"partition {p} has replica set {members!r}; "
                    "expected one or more distinct members"
                )

    @classmethod
    def build(
        cls, ring: HashRing, n_replicas: int = 3, version: int | None = None
    ) -> PartitionTable:
        """Map every partition to the ring's replicas of the partition's point.

        Args:
            ring: the hash ring.
            n_replicas: replicas per partition, at least 1; fewer when the ring has
                fewer members.
            version: the table's version; defaults to ``ring.version``.

        Returns:
            The table. Equal replica sets share one tuple, so a table costs a few
            hundred kilobytes at most.

        Raises:
            EmptyRing: the ring has no members.
            ValueError: ``n_replicas < 1``.
        """
        if n_replicas < 1:
            raise ValueError(f"replica count must be >= 1, got {n_replicas}")
        if not len(ring):
            raise EmptyRing(f"cannot build a partition table from an empty ring ({ring!r})")
        interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        sets = []
        for p in range(PARTITIONS):
            members = tuple(ring.replicas(p * HASH_SPACE // PARTITIONS, n_replicas))
            sets.append(interned.setdefault(members, members))
        return cls(version=ring.version if version is None else version, replicas=tuple(sets))

    def narrowed(self, n_replicas: int) -> PartitionTable:
        """The table with the first ``n_replicas`` members of each set (the ring walk
        names them in order, so this is the table ``build`` makes with that count).

        Raises:
            ValueError: ``n_replicas < 1``.
        """
        if n_replicas < 1:
            raise ValueError(f"replica count must be >= 1, got {n_replicas}")
        interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        sets = tuple(interned.setdefault(m[:n_replicas], m[:n_replicas])
                     for m in self.replicas)
        return PartitionTable(version=self.version, replicas=sets)

    def replica_set(self, partition: int) -> tuple[str, ...]:
        """Partition ``partition``'s replica set, primary first.

        Raises:
            ValueError: ``partition`` is outside ``[0, PARTITIONS)``.
        """
        _check_partition(partition)
        return self.replicas[partition]

    def owner(self, partition: int) -> str:
        """Partition ``partition``'s primary.

        Raises:
            ValueError: ``partition`` is outside ``[0, PARTITIONS)``.
        """
        _check_partition(partition)
        return self.replicas[partition][0]

    def members(self) -> frozenset[str]:
        """Every member that holds at least one partition."""
        return frozenset(m for members in set(self.replicas) for m in members)

    def moves(self, other: PartitionTable) -> list[PartitionMove]:
        """The partitions whose replica sets differ from ``self`` (old) to ``other`` (new).

        A change of order counts: a new primary is a hand-off even when the same
        members hold the partition.

        Returns:
            ``(partition, old_set, new_set)`` for each changed partition, in partition
            order.
        """
        return [
            PartitionMove(p, old, new)
            for p, (old, new) in enumerate(zip(self.replicas, other.replicas, strict=True))
            if old != new
        ]

    def statistics(self) -> PartitionStatistics:
        """Counts of partitions per member, as primary and in any role."""
        primaries = Counter(members[0] for members in self.replicas)
        held = Counter(m for members in self.replicas for m in members)
        n = len(held)
        return PartitionStatistics(
            version=self.version,
            partitions=PARTITIONS,
            members=n,
            replication=max(len(members) for members in self.replicas),
            min_primaries=min(primaries[m] for m in held),
            max_primaries=max(primaries.values()),
            primary_max_over_mean=max(primaries.values()) * n / PARTITIONS,
            replica_max_over_mean=max(held.values()) * n / sum(held.values()),
        )
