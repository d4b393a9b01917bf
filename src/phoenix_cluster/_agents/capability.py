"""Capabilities: which members may run an agent kind, and which one stands in.

Every member reports the kinds it hosts (the kinds whose code it imported) in its
:class:`~.._placement.policies.NodeLoad`. Keys of a kind run only on members that host
it. When a key's home (its partition's primary) lacks the kind, the home still keeps the
key's directory entry and its replicated state, and sends its messages to a *stand-in*:
the first member clockwise from the key's partition on the ring that hosts the kind, so
every home that takes over picks the same one while the capable members stay the same.
The stand-in commits through the home, like an agent moved off its home on purpose
(``docs/design/migration.md``, "Capabilities").

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from .._placement.policies import NodeLoad
from .._ring.hashing import key_hash
from .._ring.partitions import partition_of, partition_point
from .._ring.ring import HashRing
from ..errors import AgentNotFound

__all__ = ["first_capable", "no_member_hosts"]


def no_member_hosts(kind: str) -> AgentNotFound:
    """The definite error for a kind that no live member hosts."""
    return AgentNotFound(
        f"no member of the cluster hosts agent kind {kind!r} (start members with its "
        "module imported: phx node --import MODULE)"
    )


def first_capable(ring: HashRing, loads: Mapping[str, NodeLoad], alive: Set[str],
                  kind: str, key: str) -> str:
    """The member that runs ``kind/key`` for a home that lacks the kind.

    Walks the ring clockwise from the key's partition and returns the first live member
    whose reported kinds include ``kind``.

    Raises:
        AgentNotFound: no live member reports hosting ``kind``.
    """
    capable = {name for name, load in loads.items()
               if name in alive and load.kinds is not None and kind in load.kinds}
    if not capable:
        raise no_member_hosts(kind)
    point = partition_point(partition_of(key_hash(kind, key)))
    for name in ring.replicas(point, len(ring)):
        if name in capable:
            return name
    return min(capable)  # capable members the ring does not list yet (a join in flight)
