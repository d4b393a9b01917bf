"""Registers: LWWRegister (one value, last writer wins) and MVRegister (keeps every
concurrent value).

A write mints a dot and supersedes every value this replica has seen, so a write always
replaces what its writer read, whatever the clocks say. Writes that did not see each other
stay side by side: an MVRegister shows them all; an LWWRegister shows the one with the
highest ``(timestamp, replica id, counter)``, a total order, so ties break the same way
everywhere.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

import msgspec

from .base import Crdt
from .dots import Dot
from .stores import DOTFUN

__all__ = ["LWWRegister", "MVRegister", "lww_winner", "timestamp_now"]

V = TypeVar("V")


def timestamp_now() -> int:
    """The default write timestamp: wall-clock nanoseconds."""
    return time.time_ns()


def _check_timestamp(timestamp: int | None) -> int:
    if timestamp is None:
        return timestamp_now()
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise TypeError(f"timestamp must be an int, got {type(timestamp).__name__}")
    return timestamp


def lww_winner(writes: dict[Dot, tuple[int, V]]) -> tuple[int, V] | None:
    """The write with the highest ``(timestamp, dot)`` (dots order by replica id, then
    counter), or None if there is none."""
    if not writes:
        return None
    best = max(writes.items(), key=lambda kv: (kv[1][0], kv[0]))
    return best[1]


class LWWRegister(Crdt, Generic[V], tag="lwwreg"):
    """A single value where the latest write wins: a profile field, a config value, a
    leader's address.

        r = LWWRegister[str]()
        r.set("blue", replica="n1")
        r.value                                 # "blue"

    ``timestamp`` defaults to wall-clock nanoseconds; pass your own (a hybrid or logical
    clock) to order concurrent writes differently.
    """

    entries: dict[Dot, tuple[int, V]] = msgspec.field(default_factory=dict)
    _ops = DOTFUN

    @property
    def value(self) -> V | None:
        """The winning value, or None before the first write."""
        won = lww_winner(self.entries)
        return None if won is None else won[1]

    @property
    def timestamp(self) -> int | None:
        """The winning write's timestamp, or None before the first write."""
        won = lww_winner(self.entries)
        return None if won is None else won[0]

    def set(self, value: V, *, replica: str, timestamp: int | None = None) -> LWWRegister[V]:
        """Write ``value`` on behalf of ``replica``; return the delta."""
        ts = _check_timestamp(timestamp)
        dot = self._mint(replica)
        return self._apply({dot: (ts, value)}, [dot, *self.entries])


class MVRegister(Crdt, Generic[V], tag="mvreg"):
    """A multi-value register: concurrent writes are all kept until a write that saw them
    replaces them. For values the application must reconcile itself (a document title
    edited on both sides of a partition).

        r = MVRegister[str]()
        r.set("draft", replica="n1")
        r.value                                 # ["draft"]
    """

    entries: dict[Dot, V] = msgspec.field(default_factory=dict)
    _ops = DOTFUN

    @property
    def value(self) -> list[V]:
        """The concurrent values, in a deterministic order (by their writes' dots)."""
        return [v for _, v in sorted(self.entries.items(), key=_by_dot)]

    def set(self, value: V, *, replica: str) -> MVRegister[V]:
        """Write ``value`` (replacing every value seen) on behalf of ``replica``; return
        the delta."""
        dot = self._mint(replica)
        return self._apply({dot: value}, [dot, *self.entries])


def _by_dot(item: tuple[Dot, Any]) -> Dot:
    return item[0]
