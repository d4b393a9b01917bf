"""What a name's owner tells others once it decided: the other owners learn the winner
and a tombstone for the loser, the loser's holder that its registration is gone, and
every node which names to drop from its lookup cache.

All of it is sent in the background (``spawn``): a decision stands whether or not these
messages arrive, and anyone who missed one learns it at the next merge or lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .cluster import ClusterLink
from .entries import Entry
from .holdings import Holdings, Spawn
from .messages import ConflictNotice, Invalidate, StoreReply, StoreRequest, Tomb, encode
from .settings import RegistrySettings

__all__ = ["Outcomes"]

_log = logging.getLogger("phoenix_cluster.registry")


class Outcomes:
    """Tells others what this owner decided.

    Args:
        link: the cluster view and calls.
        settings: the registry settings (replicas, timeout).
        holdings: this node's own registrations (told directly when one is lost here).
        spawn: runs background sends.
        store_at: sends a ``store`` to a node (``NameOwner.store_at``).
    """

    def __init__(self, link: ClusterLink, settings: RegistrySettings, *, holdings: Holdings,
                 spawn: Spawn,
                 store_at: Callable[[str, bytes], Awaitable[StoreReply | None]]) -> None:
        self._link = link
        self._me = link.self_name
        self.settings = settings
        self._holdings = holdings
        self._spawn = spawn
        self._store_at = store_at

    def decided(self, loser: Entry, winner: Entry, *, tell: bool) -> None:
        """This owner resolved a conflict: the other owners learn the outcome (the
        winner, and a tombstone for the loser), and the loser's holder is told."""
        _log.info("name conflict on %r: kept %s's registration, dropped %s's", loser.name,
                  winner.holder, loser.holder)
        self.spread(loser.name, [winner], [Tomb(loser.name, loser.rid)])
        if tell:
            self.notify(loser, winner)

    def spread(self, name: str, entries: list[Entry], tombs: list[Tomb]) -> None:
        """Send entries and tombstones of ``name`` to its other owners, in the background."""
        payload = encode(StoreRequest("handoff", entries, tombs))
        for node in self._link.replicas(name, self.settings.replicas):
            if node != self._me:
                self._spawn(self._store_at(node, payload), "registry-spread")

    def notify(self, loser: Entry, winner: Entry | None) -> None:
        """Tell ``loser``'s holder that its registration is gone (``winner``: why)."""
        if loser.holder == self._me:
            self._holdings.lost(loser.name, loser.rid, winner)
            return
        if self._link.is_gone(loser.holder) or self._link.address(loser.holder) is None:
            return
        payload = encode(ConflictNotice(loser, winner))
        self._spawn(self._link.cast(loser.holder, "registry", "conflict", payload,
                                    self.settings.timeout_s), "registry-notify")

    def broadcast_invalidate(self, names: list[str]) -> None:
        """Make every node drop ``names`` from its lookup cache."""
        if not self._link.clustered:
            return
        payload = encode(Invalidate(names))
        for node in self._link.peers():
            self._spawn(self._link.cast(node, "registry", "invalidate", payload,
                                        self.settings.timeout_s), "registry-invalidate")
