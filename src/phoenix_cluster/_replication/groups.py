"""Replication groups: one per partition and replica count (``replicas=`` of a kind).

A kind declared with ``replicas=N`` keeps its records in the group ``(partition, N)``,
whose members are the first ``N`` members of the partition's replica set in a table
built ``MAX_REPLICAS`` wide (fewer when the cluster is smaller). Every group is its own
instance of the protocol in docs/design/replication.md (its own epochs, promises, marks
and majorities), so what holds for one partition holds for every group, whatever its
``N``; the groups of one partition share only their primary (the partition's).

A group is numbered ``partition + PARTITIONS * tier``, with ``tier`` the index of ``N``
in :data:`REPLICA_COUNTS`. The default ``N = 3`` is tier 0, so its groups are numbered
as the partitions are, on the wire and in ``data_dir`` files written before per-kind
counts existed.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .._ring.hashing import key_hash
from .._ring.partitions import PARTITIONS, PartitionTable, partition_of

__all__ = [
    "DEFAULT_REPLICAS",
    "GROUPS",
    "MAX_REPLICAS",
    "MIN_REPLICAS",
    "REPLICA_COUNTS",
    "GroupMove",
    "GroupTable",
    "group_for",
    "group_name",
    "group_of",
    "partition_for",
    "partition_of_group",
    "replicas_of_group",
]

DEFAULT_REPLICAS = 3
MIN_REPLICAS = 1
MAX_REPLICAS = 5
REPLICA_COUNTS = (3, 1, 2, 4, 5)
"""Replica counts by tier: the default first, so its groups keep the partitions' numbers."""
GROUPS = PARTITIONS * len(REPLICA_COUNTS)
_TIER = {n: tier for tier, n in enumerate(REPLICA_COUNTS)}


def group_of(partition: int, replicas: int = DEFAULT_REPLICAS) -> int:
    """The group of ``partition`` for kinds with ``replicas`` copies.

    Raises:
        ValueError: ``replicas`` is not one of :data:`REPLICA_COUNTS`.
    """
    tier = _TIER.get(replicas)
    if tier is None:
        raise ValueError(f"replicas must be one of 1..{MAX_REPLICAS}, got {replicas!r}")
    return partition + PARTITIONS * tier


def partition_of_group(group: int) -> int:
    """The partition a group belongs to."""
    return group % PARTITIONS


def replicas_of_group(group: int) -> int:
    """The replica count a group was created for (before the cluster-size cap)."""
    return REPLICA_COUNTS[group // PARTITIONS]


def partition_for(kind: str, key: str) -> int:
    """The partition of an agent address: ``partition_of(key_hash(kind, key))``."""
    return partition_of(key_hash(kind, key))


def group_for(kind: str, key: str, replicas: int = DEFAULT_REPLICAS) -> int:
    """The replication group of an agent address whose kind keeps ``replicas`` copies
    (the partition itself for the default 3)."""
    return group_of(partition_for(kind, key), replicas)


def group_name(group: int) -> str:
    """How logs and errors name a group: its partition, and its count if not 3."""
    n = replicas_of_group(group)
    p = partition_of_group(group)
    return f"partition {p}" if n == DEFAULT_REPLICAS else f"partition {p} (replicas={n})"


class GroupMove(NamedTuple):
    """A group whose member set differs between two tables."""

    group: int
    old: tuple[str, ...]
    new: tuple[str, ...]


class GroupTable:
    """Every group's members, primary first, read off a partition table.

    Args:
        table: partition table; its sets should be ``MAX_REPLICAS`` wide (a narrower
            table caps every count at its width, as a small cluster does).
    """

    __slots__ = ("_sets", "partitions")

    def __init__(self, table: PartitionTable) -> None:
        self.partitions = table
        interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        sets: list[tuple[str, ...]] = []
        for n in REPLICA_COUNTS:
            for members in table.replicas:
                prefix = members[:n]
                sets.append(interned.setdefault(prefix, prefix))
        self._sets = sets

    def members(self, group: int) -> tuple[str, ...]:
        """The group's members, the partition's primary first."""
        return self._sets[group]

    def primary(self, group: int) -> str:
        """The member that leads the group (the partition's primary)."""
        return self._sets[group][0]

    def groups(self) -> Iterator[tuple[int, tuple[str, ...]]]:
        """Every ``(group, members)``."""
        return enumerate(self._sets)

    def moves(self, previous: GroupTable) -> Iterator[GroupMove]:
        """The groups whose members differ since ``previous``; a change of order counts
        (a new primary is a hand-off even when the same members hold the group)."""
        before, after = previous.partitions.replicas, self.partitions.replicas
        changed = [p for p, (old, new) in enumerate(zip(before, after, strict=True))
                   if old is not new and old != new]
        for tier in range(len(REPLICA_COUNTS)):  # in group order
            base = tier * PARTITIONS
            for p in changed:
                old, new = previous._sets[base + p], self._sets[base + p]
                if old != new:
                    yield GroupMove(base + p, old, new)
