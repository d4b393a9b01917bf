"""Dot stores and their joins (Almeida, Shoker and Baquero, "Delta State Replicated Data
Types", 2018, section 5).

A causal CRDT is a pair (store, causal context). Three store shapes cover every type here:

- DotSet ``set[Dot]``: which events are live (the elements' "add tags").
- DotFun ``dict[Dot, V]``: a value per live event (registers, counters).
- DotMap ``dict[K, store]``: a store per key (sets of elements, maps of CRDTs).

Joining two pairs keeps a dot if both stores have it, or one store has it and the other
context has not seen it: "seen by the other side and gone there" means removed. Each
operation here is one piece of that join for one shape; ``Nested`` lets a DotMap hold whole
CRDT objects, whose own stores then join under the enclosing map's contexts.

Joins update the left store in place and never keep references into the right one (a
delta may be joined into several replicas). Values in a DotFun are treated as immutable.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from .dots import CausalContext, Dot

__all__ = ["DOTFUN", "DOTSET", "DotMap", "Keep", "StoreOps"]

S = TypeVar("S")
K = TypeVar("K")
V = TypeVar("V")
Keep = Callable[[Dot], bool]


class StoreOps(Protocol[S]):
    """The operations a CRDT needs from its dot store."""

    def join(self, a: S, ca: CausalContext, b: S, cb: CausalContext) -> tuple[S, bool]:
        """``(a, ca) ⊔ (b, cb)``'s store, built in ``a``; and whether ``a`` lost a dot."""

    def discard(self, a: S, cb: CausalContext) -> tuple[S, bool]:
        """``(a, _) ⊔ (empty, cb)``'s store: ``a`` without the dots in ``cb``."""

    def restrict(self, a: S, keep: Keep) -> S:
        """A new store with only the dots of ``a`` for which ``keep`` is true."""

    def copy(self, a: S) -> S:
        """An independent copy of ``a``."""

    def dots(self, a: S) -> Iterable[Dot]:
        """The live dots of ``a``."""

    def is_empty(self, a: S) -> bool:
        """Whether ``a`` holds no dot."""


class _DotSet:
    def join(
        self, a: set[Dot], ca: CausalContext, b: set[Dot], cb: CausalContext
    ) -> tuple[set[Dot], bool]:
        gone = [d for d in a if d not in b and d in cb]
        a.difference_update(gone)
        a.update(d for d in b if d not in ca)
        return a, bool(gone)

    def discard(self, a: set[Dot], cb: CausalContext) -> tuple[set[Dot], bool]:
        gone = [d for d in a if d in cb]
        a.difference_update(gone)
        return a, bool(gone)

    def restrict(self, a: set[Dot], keep: Keep) -> set[Dot]:
        return {d for d in a if keep(d)}

    def copy(self, a: set[Dot]) -> set[Dot]:
        return set(a)

    def dots(self, a: set[Dot]) -> Iterable[Dot]:
        return a

    def is_empty(self, a: set[Dot]) -> bool:
        return not a


class _DotFun:
    def join(
        self, a: dict[Dot, Any], ca: CausalContext, b: dict[Dot, Any], cb: CausalContext
    ) -> tuple[dict[Dot, Any], bool]:
        gone = [d for d in a if d not in b and d in cb]
        for d in gone:
            del a[d]
        for d, v in b.items():
            if d not in ca:
                a[d] = v
        return a, bool(gone)

    def discard(self, a: dict[Dot, Any], cb: CausalContext) -> tuple[dict[Dot, Any], bool]:
        gone = [d for d in a if d in cb]
        for d in gone:
            del a[d]
        return a, bool(gone)

    def restrict(self, a: dict[Dot, Any], keep: Keep) -> dict[Dot, Any]:
        return {d: v for d, v in a.items() if keep(d)}

    def copy(self, a: dict[Dot, Any]) -> dict[Dot, Any]:
        return dict(a)

    def dots(self, a: dict[Dot, Any]) -> Iterable[Dot]:
        return a.keys()

    def is_empty(self, a: dict[Dot, Any]) -> bool:
        return not a


DOTSET: StoreOps[set[Dot]] = _DotSet()
DOTFUN: StoreOps[dict[Dot, Any]] = _DotFun()

# Enumerate the other side's context to find the keys it can touch only while that costs
# less than visiting every key.
_ENUMERATE_SLACK = 64


class DotMap(Generic[K, S]):
    """Store operations for ``dict[K, inner store]``; empty inner stores are dropped."""

    __slots__ = ("inner",)

    def __init__(self, inner: StoreOps[S]) -> None:
        self.inner = inner

    def join(
        self, a: dict[K, S], ca: CausalContext, b: dict[K, S], cb: CausalContext
    ) -> tuple[dict[K, S], bool]:
        inner = self.inner
        lost = False
        for k in self._keys_to_visit(a, ca, b, cb):
            va = a.get(k)
            vb = b.get(k)
            if va is None:
                if vb is None:
                    continue
                v = inner.restrict(vb, lambda d: d not in ca)
            elif vb is None:
                v, gone = inner.discard(va, cb)
                lost = lost or gone
            else:
                v, gone = inner.join(va, ca, vb, cb)
                lost = lost or gone
            if inner.is_empty(v):
                if a.pop(k, None) is not None:
                    lost = True
            else:
                a[k] = v
        return a, lost

    def _keys_to_visit(
        self, a: dict[K, S], ca: CausalContext, b: dict[K, S], cb: CausalContext
    ) -> Iterable[K]:
        """The keys whose stores the join can change.

        Those of ``b``, plus any key of ``a`` holding a dot that ``cb`` marks as removed.
        A small ``cb`` (a delta's) is enumerated to find such dots, so applying a delta
        costs the size of the delta, not of the state; only a delta that removes
        something scans the keys of ``a``, and then with a cheap set test per key.
        """
        if not a:
            return list(b)
        if len(cb) > len(a) + _ENUMERATE_SLACK:
            return a.keys() | b.keys()
        inner = self.inner
        removed = {d for d in cb.dots() if d in ca}
        if removed:
            for k, vb in b.items():
                removed.difference_update(inner.dots(vb))
                va = a.get(k)
                if va is not None:
                    removed.difference_update(inner.dots(va))
        return [*b, *self._holding(a, removed, b)]

    def _holding(self, a: dict[K, S], dots: set[Dot], skip: dict[K, S]) -> list[K]:
        """The keys of ``a`` (not in ``skip``) whose stores hold one of ``dots``."""
        if not dots:
            return []
        inner = self.inner
        return [k for k, v in a.items() if k not in skip and not dots.isdisjoint(inner.dots(v))]

    def discard(self, a: dict[K, S], cb: CausalContext) -> tuple[dict[K, S], bool]:
        if len(cb) > len(a) + _ENUMERATE_SLACK:
            keys: Iterable[K] = list(a)
        else:
            keys = self._holding(a, set(cb.dots()), {})
        lost = False
        inner = self.inner
        for k in keys:
            v, gone = inner.discard(a[k], cb)
            lost = lost or gone
            if inner.is_empty(v):
                del a[k]
        return a, lost

    def restrict(self, a: dict[K, S], keep: Keep) -> dict[K, S]:
        out: dict[K, S] = {}
        inner = self.inner
        for k, v in a.items():
            kept = inner.restrict(v, keep)
            if not inner.is_empty(kept):
                out[k] = kept
        return out

    def copy(self, a: dict[K, S]) -> dict[K, S]:
        copy = self.inner.copy
        return {k: copy(v) for k, v in a.items()}

    def dots(self, a: dict[K, S]) -> Iterable[Dot]:
        inner = self.inner
        for v in a.values():
            yield from inner.dots(v)

    def is_empty(self, a: dict[K, S]) -> bool:
        return not a
