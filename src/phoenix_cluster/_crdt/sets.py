"""Sets: GSet (add only), TwoPSet (add, then remove for good) and ORSet (add-wins).

Each element maps to the dots of the adds (and, for TwoPSet, removes) that produced it.
Removing deletes the dots this replica has seen, so an add made concurrently elsewhere,
with a dot the remover never saw, survives the join: add wins.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import typing
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

import msgspec

from .base import Crdt, Keyed
from .dots import Dot
from .stores import DOTFUN, DOTSET, DotMap

__all__ = ["GSet", "ORSet", "TwoPSet"]

T = TypeVar("T", bound=Hashable)


class _Elements(Keyed[T]):
    """The sets whose elements map to the dot sets of their adds."""

    entries: dict[T, set[Dot]] = msgspec.field(default_factory=dict)
    _ops = DotMap(DOTSET)

    @property
    def value(self) -> frozenset[T]:
        """The elements present."""
        return frozenset(self.entries)


class GSet(_Elements[T], tag="gset"):
    """A set that only grows: tags seen, users who ever logged in.

        s = GSet[str]()
        delta = s.add("x", replica="n1")
        "x" in s                                # True
    """

    def add(self, element: T, *, replica: str) -> GSet[T]:
        """Add ``element`` on behalf of ``replica``; return the delta (empty if present)."""
        if element in self.entries:
            return GSet()
        dot = self._mint(replica)
        return self._apply({element: {dot}}, [dot])


class ORSet(_Elements[T], tag="orset"):
    """An observed-remove set where a concurrent add beats a remove: carts, members,
    subscriptions.

        s = ORSet[str]()
        s.add("apple", replica="n1")
        s.remove("apple", replica="n1")
    """

    def add(self, element: T, *, replica: str) -> ORSet[T]:
        """Add ``element`` on behalf of ``replica``; return the delta.

        Re-adding a present element mints a fresh dot, so it also survives a concurrent
        remove of the older add.
        """
        dot = self._mint(replica)
        return self._apply({element: {dot}}, [dot, *self.entries.get(element, ())])

    def remove(self, element: T, *, replica: str | None = None) -> ORSet[T]:
        """Remove ``element`` (the adds this replica has seen); return the delta.

        Removing an absent element is a no-op that returns an empty delta. ``replica``
        is accepted for symmetry with :meth:`add`; a removal mints no dot.
        """
        dots = self.entries.pop(element, None)
        return self._removal(dots or ())

    def clear(self, *, replica: str | None = None) -> ORSet[T]:
        """Remove every element seen so far; return the delta."""
        dots = [d for ds in self.entries.values() for d in ds]
        self.entries.clear()
        return self._removal(dots)


class TwoPSet(Crdt, Generic[T], tag="twopset"):
    """A two-phase set: an element can be added, then removed for good (it can never come
    back). For identifiers that must not be reused: revoked tokens, retired ids.

    A remove wins over any add, concurrent or later. Removing an element never added is
    allowed and keeps it from ever being added.
    """

    entries: dict[T, dict[Dot, bool]] = msgspec.field(default_factory=dict)
    _ops = DotMap(DOTFUN)
    # Per element, the dots of its adds (True) and of its tombstone (False).

    @property
    def value(self) -> frozenset[T]:
        """The elements added and not removed."""
        return frozenset(e for e, marks in self.entries.items() if all(marks.values()))

    def __contains__(self, element: object) -> bool:
        marks = self.entries.get(typing.cast("T", element))
        return marks is not None and all(marks.values())

    def __iter__(self) -> Iterator[T]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def removed(self) -> frozenset[T]:
        """The elements removed for good."""
        return frozenset(e for e, marks in self.entries.items() if not all(marks.values()))

    def add(self, element: T, *, replica: str) -> TwoPSet[T]:
        """Add ``element``; return the delta (empty if present or ever removed)."""
        if element in self.entries:
            return TwoPSet()
        dot = self._mint(replica)
        return self._apply({element: {dot: True}}, [dot])

    def remove(self, element: T, *, replica: str) -> TwoPSet[T]:
        """Remove ``element`` for good; return the delta (empty if already removed).

        The tombstone replaces the adds this replica has seen, so the set keeps one dot
        per removed element.
        """
        marks = self.entries.get(element, {})
        if not all(marks.values()):
            return TwoPSet()
        dot = self._mint(replica)
        return self._apply({element: {dot: False}}, [dot, *marks])
