"""Capabilities: which members may run an agent kind, and which one stands in.

Every member reports the kinds it hosts (the kinds whose code it imported) in its
:class:`~.._placement.policies.NodeLoad`. Keys of a kind run only on members that host
it. When a key's home (its partition's primary) lacks the kind, the home still keeps the
key's directory entry and its replicated state, and sends its messages to a *stand-in*:
the first member clockwise from the key's partition on the ring that hosts the kind, so
every home that takes over picks the same one while the capable members stay the same.
The stand-in commits through the home, like an agent moved off its home on purpose
(``docs/design/migration.md``, "Capabilities"). A home that runs an older application
version than other members hosting the kind is treated the same way during a rolling
upgrade: new activations go to a member of the newest version.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from .._placement.app_version import version_key
from .._placement.policies import NodeLoad
from .._ring.hashing import key_hash
from .._ring.partitions import partition_of, partition_point
from .._ring.ring import HashRing
from ..errors import AgentNotFound

__all__ = ["first_capable", "newest_capable", "no_member_hosts"]


def no_member_hosts(kind: str) -> AgentNotFound:
    """The definite error for a kind that no live member hosts."""
    return AgentNotFound(
        f"no member of the cluster hosts agent kind {kind!r} (start members with its "
        "module imported: phx node --import MODULE)"
    )


def newest_capable(loads: Mapping[str, NodeLoad], alive: Set[str], kind: str,
                   ) -> tuple[set[str], tuple[tuple[int, int, str], ...]]:
    """The live members that report hosting ``kind`` and run the newest application
    version among those that do, and that version's key (empty set: none hosts it)."""
    capable = [load for name, load in loads.items()
               if name in alive and load.kinds is not None and kind in load.kinds]
    if not capable:
        return set(), ()
    newest = max(version_key(load.app_version) for load in capable)
    return {load.name for load in capable if version_key(load.app_version) == newest}, newest


def first_capable(ring: HashRing, loads: Mapping[str, NodeLoad], alive: Set[str],
                  kind: str, key: str) -> str:
    """The member that runs ``kind/key`` for a home that lacks the kind, or runs an older
    application version than other members that host it.

    Walks the ring clockwise from the key's partition and returns the first live member
    that reports hosting ``kind`` at the newest version among those that do.

    Raises:
        AgentNotFound: no live member reports hosting ``kind``.
    """
    capable, _ = newest_capable(loads, alive, kind)
    if not capable:
        raise no_member_hosts(kind)
    point = partition_point(partition_of(key_hash(kind, key)))
    for name in ring.replicas(point, len(ring)):
        if name in capable:
            return name
    return min(capable)  # capable members the ring does not list yet (a join in flight)
