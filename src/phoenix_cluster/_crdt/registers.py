"""Registers: LWWRegister (one value, last writer wins) and MVRegister (keeps every
concurrent value).

A write mints a dot and supersedes every value this replica has seen, so a write always
replaces what its writer read, whatever the clocks say. Writes that did not see each other
stay side by side: an MVRegister shows them all; an LWWRegister shows the one with the
highest ``(timestamp, replica id, counter)``, a total order, so ties break the same way
everywhere.

Both take a conflict-resolution hook (:meth:`MVRegister.resolve`, :meth:`MVRegister.settle`
and the same on LWWRegister): a function of the concurrent writes (each with its dot,
and its timestamp for LWW) and the register's causal context. The hook runs on read and
never inside ``merge``, so merge stays a join (commutative, associative, idempotent) for
any hook, and every replica holding the same state resolves it the same way: the hook
sees the writes in one order everywhere (by dot). ``settle`` writes the resolved value
back as an ordinary write that saw every sibling, so it replaces them wherever it reaches.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from .base import Crdt
from .dots import CausalContext, Dot
from .stores import DOTFUN

__all__ = ["ConflictHook", "LWWRegister", "MVRegister", "Sibling", "lww_winner",
           "timestamp_now"]

V = TypeVar("V")


class Sibling(NamedTuple, Generic[V]):
    """One of a register's concurrent writes, as a conflict hook sees it."""

    value: V
    dot: Dot
    """``(replica id, counter)`` of the write: who wrote it, and its place in that
    replica's history (the register's context tells what else had been seen)."""
    timestamp: int | None = None
    """The write's timestamp (LWWRegister); ``None`` for an MVRegister."""


ConflictHook = Callable[[Sequence[Sibling[V]], CausalContext], V]
"""``hook(siblings, context) -> value``: the custom merge of concurrent register writes.

Called with two or more siblings whose values differ, ordered by dot (the same order on
every replica), and a copy of the register's causal context. It must be deterministic
(a function of its arguments only) for replicas to agree; it may return a new value."""


def _resolve(siblings: list[Sibling[V]], context: CausalContext,
             hook: ConflictHook[V]) -> tuple[V, bool] | None:
    """``(value, conflicting)``: the hook's answer when the siblings' values differ;
    ``None`` before the first write."""
    if not siblings:
        return None
    first = siblings[0].value
    if all(s.value == first for s in siblings[1:]):
        return first, False  # equal values (concurrent settles agreed): no conflict
    return hook(siblings, context.copy()), True


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

    @property
    def siblings(self) -> list[Sibling[V]]:
        """The concurrent writes this register holds, by dot (one, once writes saw each
        other); the last-writer-wins value is only one of them."""
        return [Sibling(v, d, ts) for d, (ts, v) in sorted(self.entries.items(), key=_by_dot)]

    def resolve(self, hook: ConflictHook[V]) -> V | None:
        """The value ``hook`` makes of concurrent writes, instead of the latest one; the
        value itself when there is no conflict, ``None`` before the first write."""
        resolved = _resolve(self.siblings, self.context, hook)
        return None if resolved is None else resolved[0]

    def settle(self, hook: ConflictHook[V], *, replica: str) -> LWWRegister[V] | None:
        """Write the resolved value back (replacing the siblings) and return the delta,
        or ``None`` when there was nothing to resolve. Its timestamp is at least every
        sibling's, so it also wins against those under plain last-writer-wins."""
        siblings = self.siblings
        resolved = _resolve(siblings, self.context, hook)
        if resolved is None or not resolved[1]:
            return None
        latest = max(s.timestamp or 0 for s in siblings)
        return self.set(resolved[0], replica=replica,
                        timestamp=max(timestamp_now(), latest + 1))


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

    @property
    def siblings(self) -> list[Sibling[V]]:
        """The concurrent writes, by dot (as ``value``, with their dots)."""
        return [Sibling(v, d) for d, v in sorted(self.entries.items(), key=_by_dot)]

    def resolve(self, hook: ConflictHook[V]) -> V | None:
        """One value from the concurrent writes: ``hook(siblings, context)`` when their
        values differ, else the value; ``None`` before the first write."""
        resolved = _resolve(self.siblings, self.context, hook)
        return None if resolved is None else resolved[0]

    def settle(self, hook: ConflictHook[V], *, replica: str) -> MVRegister[V] | None:
        """Write the resolved value back, replacing the siblings it saw, and return the
        delta; ``None`` when the values did not conflict."""
        resolved = _resolve(self.siblings, self.context, hook)
        if resolved is None or not resolved[1]:
            return None
        return self.set(resolved[0], replica=replica)


def _by_dot(item: tuple[Dot, Any]) -> Dot:
    return item[0]
