"""The names one owner node stores: live registrations, tombstones, and who holds what.

A :class:`NameStore` holds at most one live :class:`~.entries.Entry` per name. Every write
goes through :meth:`NameStore.merge`, which applies the conflict rule of ``entries``, so
the order in which an owner hears of registrations (replication, hand-off, re-assertion
by holders) never changes the outcome.

Tombstones remember unregistered registration ids (``name``, ``rid``) for ``ttl_s``, so a
copy of the old registration arriving late (a slow replica, a hand-off) is refused instead
of coming back to life. The loser of a conflict is buried the same way: once an owner
decided it lost, it stays lost there, and owners that exchange their entries and
tombstones end with the same live registration whatever order they heard them in.

A holder's *boot* (its incarnation at start) fences its past lives: once a registration
from a newer boot of a holder arrives, the linked registrations of its older boots are
released and later copies of them are refused.

Pure: the caller passes the time (``now``, monotonic seconds). No I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

import msgspec

from .entries import Entry, resolve

__all__ = ["DEFAULT_TOMBSTONE_TTL_S", "Merge", "NameStore", "Outcome"]

DEFAULT_TOMBSTONE_TTL_S = 600.0
"""How long an unregistered registration id is remembered: far longer than a hand-off or
a re-assertion round takes, short enough that tombstones never pile up."""

Outcome = Literal["stored", "same", "replaced", "kept", "buried", "stale"]


class Merge(NamedTuple):
    """What :meth:`NameStore.merge` did with an incoming registration.

    ``outcome``:
        ``stored``: the name was free; the entry is now live.
        ``same``: this very registration (same ``rid``) was already live.
        ``replaced``: the entry won over a different live one, ``loser``.
        ``kept``: a different live registration, ``winner``, beat the entry.
        ``buried``: the entry was unregistered (a tombstone refused it).
        ``stale``: the entry comes from an older boot of its holder.
    """

    outcome: Outcome
    winner: Entry | None
    loser: Entry | None


class NameStore:
    """The registrations one owner stores (see the module docstring).

    Args:
        ttl_s: how long tombstones are kept.
    """

    __slots__ = ("_boots", "_by_holder", "_entries", "_strings", "_tombs", "ttl_s")

    def __init__(self, ttl_s: float = DEFAULT_TOMBSTONE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, Entry] = {}
        self._tombs: dict[str, dict[int, float]] = {}  # name -> rid -> expiry
        self._by_holder: dict[str, set[str]] = {}  # holder -> names it holds here
        self._boots: dict[str, int] = {}  # holder -> newest boot seen
        # Holder and kind names repeat across entries; entries that arrive decoded from
        # the wire carry a copy each, so stored entries share one (saves ~100 B a name).
        self._strings: dict[str, str] = {}

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def entries(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def tombstones(self) -> Iterator[tuple[str, int]]:
        """Every remembered ``(name, rid)`` that was unregistered."""
        return iter([(n, rid) for n, rids in self._tombs.items() for rid in rids])

    def tombstone_count(self) -> int:
        return sum(len(r) for r in self._tombs.values())

    def names(self, prefix: str = "") -> list[str]:
        """Live names starting with ``prefix``, sorted."""
        return sorted(n for n in self._entries if n.startswith(prefix))

    def holders(self) -> list[str]:
        return list(self._by_holder)

    def held_by(self, holder: str) -> list[Entry]:
        return [self._entries[n] for n in self._by_holder.get(holder, ())]

    def is_buried(self, name: str, rid: int) -> bool:
        rids = self._tombs.get(name)
        return rids is not None and rid in rids

    # ------------------------------------------------------------------ writing

    def merge(self, entry: Entry, now: float) -> Merge:
        """Store ``entry`` unless a tombstone, an older boot or the conflict rule refuses it.

        A ``replaced`` or ``stale`` result may have released other registrations; the
        caller learns the replaced one from ``loser``.
        """
        if self.is_buried(entry.name, entry.rid):
            return Merge("buried", self._entries.get(entry.name), entry)
        newest = self._boots.get(entry.holder)
        if newest is not None and entry.boot < newest and entry.linked:
            return Merge("stale", self._entries.get(entry.name), entry)
        if newest is None or entry.boot > newest:
            self._boots[entry.holder] = entry.boot
            if newest is not None:
                self.release_holder(entry.holder, before_boot=entry.boot)
        current = self._entries.get(entry.name)
        if current is None:
            self._put(entry)
            return Merge("stored", entry, None)
        if current == entry:
            return Merge("same", current, None)
        # A conflict: the loser is buried, so its holder's loss is final here even if
        # the winner is unregistered later (a late copy of the loser must not return).
        if resolve(current, entry) is current:
            self._tombs.setdefault(entry.name, {})[entry.rid] = now + self.ttl_s
            return Merge("kept", current, entry)
        self._tombs.setdefault(entry.name, {})[current.rid] = now + self.ttl_s
        self._remove(current)
        self._put(entry)
        return Merge("replaced", entry, current)

    def bury(self, name: str, rid: int, now: float) -> Entry | None:
        """Remember that registration ``rid`` of ``name`` is gone; drop it if it is live.

        Returns the live entry that was dropped, if any.
        """
        self._tombs.setdefault(name, {})[rid] = now + self.ttl_s
        current = self._entries.get(name)
        if current is not None and current.rid == rid:
            self._remove(current)
            return current
        return None

    def drop(self, name: str) -> Entry | None:
        """Forget ``name`` and its tombstones here (it was handed to its new owners)."""
        self._tombs.pop(name, None)
        current = self._entries.get(name)
        if current is not None:
            self._remove(current)
        return current

    def release_holder(self, holder: str, *, before_boot: int | None = None) -> list[Entry]:
        """Drop the linked registrations of ``holder`` (only boots below ``before_boot``
        if given); returns them. Unlinked ones (``lifetime="cluster"``) stay."""
        released = []
        for name in list(self._by_holder.get(holder, ())):
            entry = self._entries[name]
            if entry.linked and (before_boot is None or entry.boot < before_boot):
                self._remove(entry)
                released.append(entry)
        return released

    def expire(self, now: float) -> int:
        """Forget tombstones past their time; returns how many."""
        count = 0
        for name in list(self._tombs):
            rids = self._tombs[name]
            for rid in [r for r, expiry in rids.items() if expiry <= now]:
                del rids[rid]
                count += 1
            if not rids:
                del self._tombs[name]
        return count

    def _put(self, entry: Entry) -> None:
        strings = self._strings
        holder = strings.setdefault(entry.holder, entry.holder)
        kind = strings.setdefault(entry.kind, entry.kind)
        if holder is not entry.holder or kind is not entry.kind:
            entry = msgspec.structs.replace(entry, holder=holder, kind=kind)
        self._entries[entry.name] = entry
        self._by_holder.setdefault(entry.holder, set()).add(entry.name)

    def _remove(self, entry: Entry) -> None:
        del self._entries[entry.name]
        names = self._by_holder.get(entry.holder)
        if names is not None:
            names.discard(entry.name)
            if not names:
                del self._by_holder[entry.holder]

    def __repr__(self) -> str:
        return f"<NameStore [{len(self._entries)} names, {self.tombstone_count()} tombstones]>"
