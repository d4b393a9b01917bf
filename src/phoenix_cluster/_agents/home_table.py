"""Homes of agents: the partition table of this node's membership view.

Every agent has a *home*, its partition's primary on the hash ring of the hosting
members (``docs/design/migration.md``). This module keeps the current and the previous
table (a new home pulls an agent from its previous holder for ``window_s`` after a
change), the table without this node (what the others use once it leaves), and the
members' addresses. No I/O: the placement service feeds it each new view.
"""

from __future__ import annotations

from .._foundation.env import Clock
from .._ring.hashing import key_hash
from .._ring.partitions import PARTITIONS, partition_of, partition_point
from .._ring.ring import HashRing

__all__ = ["HomeTable"]


class HomeTable:
    """Homes of every partition in this node's view, and the members' addresses.

    Args:
        self_name: this node's name.
        clock: the node's clock (when the table last changed).
        window_s: how long after a table change the previous homes may still hold
            agents (:meth:`previous_holders`).
    """

    def __init__(self, self_name: str, clock: Clock, window_s: float) -> None:
        self.self_name = self_name
        self.clock = clock
        self.window_s = window_s
        self.ring: HashRing | None = None
        self.addresses: dict[str, str] = {}
        self.alive: frozenset[str] = frozenset()
        self.owners: list[str] | None = None
        """The home of every partition, as in effect: the table without this node
        while it leaves. Read directly on every message's route (``placement.py``)."""
        self.leaving = False
        """This node leaves: homes are those of the table without it (set it with
        :meth:`set_leaving`; a plain attribute, read on every message's route)."""
        self.changed_at = -1e18
        self._owners: list[str] | None = None
        self._prev_owners: list[str] | None = None
        self._solo_owners: list[str] | None = None

    def set_leaving(self, leaving: bool) -> None:
        """This node starts (or stops) leaving: homes become those without it."""
        self.leaving = leaving
        self.owners = self._solo() if leaving else self._owners

    def update(self, ring: HashRing | None, addresses: dict[str, str]) -> bool:
        """A new membership view; ``True`` when the hosting members changed."""
        self.addresses = addresses
        if ring is self.ring:
            return False
        self.ring = ring
        self.alive = frozenset(ring.members) if ring is not None else frozenset()
        self._prev_owners = self._owners
        self._owners = _owners(ring) if ring is not None else None
        self._solo_owners = None
        self.owners = self._solo() if self.leaving else self._owners
        self.changed_at = self.clock.monotonic()
        return True

    def home(self, kind: str, key: str) -> str | None:
        """The agent's home (its partition's primary); ``None`` when no member is known."""
        owners = self.owners
        if owners is None:
            return None
        return owners[partition_of(key_hash(kind, key))]

    def _solo(self) -> list[str] | None:
        """Homes in the table without this node (what the others use once it left)."""
        if self._solo_owners is None:
            ring = self.ring
            if ring is None or self.self_name not in ring.members:
                self._solo_owners = self._owners
            elif len(ring.members) > 1:
                self._solo_owners = _owners(ring.without_member(self.self_name))
        return self._solo_owners

    def previous_holders(self, kind: str, key: str) -> list[str]:
        """Live members other than this one that may still hold the agent: its home in
        the previous table and in the table without this node, within ``window_s`` of
        the last change (a fresh activation here pulls it from them first)."""
        if self.clock.monotonic() - self.changed_at > self.window_s:
            return []
        p = partition_of(key_hash(kind, key))
        found: list[str] = []
        for owners in (self._prev_owners, self._solo()):
            if owners is not None:
                name = owners[p]
                if name != self.self_name and name in self.alive and name not in found:
                    found.append(name)
        return found


def _owners(ring: HashRing) -> list[str]:
    """The home of every partition: the ring owner of the partition's point."""
    return [ring.owner(partition_point(p)) for p in range(PARTITIONS)]
