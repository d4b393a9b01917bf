"""Counters: GCounter (grow only) and PNCounter (up and down).

Each replica keeps one live dot holding its running total; an increment mints a new dot
that supersedes the old one. A reader sums, per replica, the total at that replica's
highest live dot, so a delta applied before the one it supersedes never counts twice.
Being dot-based, counters nest in an :class:`~.maps.ORMap`, where removing the key resets
them (an increment concurrent with that removal keeps its replica's whole total).

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from .base import Crdt
from .dots import Dot
from .stores import DOTFUN

__all__ = ["GCounter", "PNCounter"]

Total = Annotated[int, msgspec.Meta(ge=0)]
V = TypeVar("V")


def _latest(entries: dict[Dot, V]) -> dict[str, tuple[int, V]]:
    """Per replica, its highest live dot's counter and value."""
    top: dict[str, tuple[int, V]] = {}
    for (replica, n), v in entries.items():
        seen = top.get(replica)
        if seen is None or n > seen[0]:
            top[replica] = (n, v)
    return top


def _check_amount(by: object) -> int:
    if not isinstance(by, int) or isinstance(by, bool):
        raise TypeError(f"counter amount must be an int, got {type(by).__name__}")
    return by


class GCounter(Crdt, tag="gcounter"):
    """A counter that only grows: page views, events seen, retries spent.

        c = GCounter()
        delta = c.increment(2, replica="n1")   # ship `delta` to other replicas
        c.value                                 # 2
    """

    entries: dict[Dot, Total] = msgspec.field(default_factory=dict)
    _ops = DOTFUN

    @property
    def value(self) -> int:
        """The sum of every replica's increments."""
        return sum(v for _, v in _latest(self.entries).values())

    def increment(self, by: int = 1, *, replica: str) -> GCounter:
        """Add ``by`` (>= 0) on behalf of ``replica``; return the delta.

        Raises:
            ValueError: ``by`` is negative (use a :class:`PNCounter`).
        """
        if _check_amount(by) < 0:
            raise ValueError(f"a GCounter cannot decrease (by={by}); use a PNCounter")
        if by == 0:
            return GCounter()
        mine = [d for d in self.entries if d[0] == replica]
        total = self.entries[max(mine)] if mine else 0
        dot = self._mint(replica)
        return self._apply({dot: total + by}, [dot, *mine])


class PNCounter(Crdt, tag="pncounter"):
    """A counter that goes up and down: stock levels, open sessions, votes.

        c = PNCounter()
        c.increment(5, replica="n1")
        c.decrement(2, replica="n2")
        c.value                                 # 3
    """

    entries: dict[Dot, tuple[Total, Total]] = msgspec.field(default_factory=dict)
    _ops = DOTFUN

    @property
    def value(self) -> int:
        """Increments minus decrements, over all replicas."""
        return sum(p - n for _, (p, n) in _latest(self.entries).values())

    def increment(self, by: int = 1, *, replica: str) -> PNCounter:
        """Add ``by`` (a negative ``by`` decrements) on behalf of ``replica``; return the
        delta."""
        if _check_amount(by) == 0:
            return PNCounter()
        mine = [d for d in self.entries if d[0] == replica]
        p, n = self.entries[max(mine)] if mine else (0, 0)
        dot = self._mint(replica)
        total = (p + by, n) if by > 0 else (p, n - by)
        return self._apply({dot: total}, [dot, *mine])

    def decrement(self, by: int = 1, *, replica: str) -> PNCounter:
        """Subtract ``by`` on behalf of ``replica``; return the delta."""
        return self.increment(-_check_amount(by), replica=replica)
