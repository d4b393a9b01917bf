"""Maps: ORMap (keys to nested CRDTs) and LWWMap (keys to plain values, last writer wins).

An ORMap's nested values share the map's causal context: a nested mutation mints its dot
from the map, so dots stay unique across all keys and one context says what the whole
map has seen. Removing a key removes the dots seen under it; an update made concurrently
elsewhere survives (update wins), and a removed counter starts again from zero.

A key is identified together with its value's type, as in Riak's maps: if two replicas
concurrently put different CRDT types under one key, both are kept (``get(key, kind)``
reads each) instead of one silently replacing the other, which no join could do
consistently.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, Union

import msgspec

from .base import NESTED, Crdt, Keyed
from .counters import GCounter, PNCounter
from .dots import CausalContext, Dot
from .registers import LWWRegister, MVRegister, _check_timestamp, lww_winner
from .sets import GSet, ORSet, TwoPSet
from .stores import DOTFUN, DotMap

__all__ = ["LWWMap", "ORMap"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
C = TypeVar("C", bound=Crdt)

# What an ORMap can hold: every CRDT type of this package (a tagged msgpack union).
Nested = Union[
    GCounter,
    PNCounter,
    GSet[Any],
    TwoPSet[Any],
    ORSet[Any],
    LWWRegister[Any],
    MVRegister[Any],
    "ORMap[Any]",
    "LWWMap[Any, Any]",
]


def _tag(cls: type[Crdt]) -> str:
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} is not a concrete CRDT type")
    return tag


def _crdt_class(kind: Any) -> type[Crdt]:
    cls = typing.get_origin(kind) or kind
    if not (isinstance(cls, type) and issubclass(cls, Crdt)):
        raise TypeError(f"an ORMap value must be a CRDT type, got {kind!r}")
    return cls


class ORMap(Keyed[K], tag="ormap"):
    """A map from keys to nested CRDTs (counters, sets, registers, maps): a shopping cart
    of counters, a user's profile of registers and sets.

        m = ORMap[str]()
        m.update("apples", PNCounter, lambda c: c.increment(3, replica="n1"))
        m.update("tags", ORSet, lambda s: s.add("fruit", replica="n1"))
        m.value                                 # {"apples": 3, "tags": frozenset({"fruit"})}
        m.remove("apples")
    """

    entries: dict[K, dict[str, Nested]] = msgspec.field(default_factory=dict)
    _ops = DotMap(DotMap(NESTED))
    # key -> {type tag -> nested value}; nested values keep an empty context of their own.

    @property
    def value(self) -> dict[K, Any]:
        """Each key's nested ``.value``. (If concurrent updates left several types under
        one key, the one whose tag sorts first is shown; :meth:`get` reads each.)"""
        return {k: kinds[min(kinds)].value for k, kinds in self.entries.items()}

    def get(self, key: K, kind: type[C] | None = None) -> C | None:
        """A copy of the value under ``key`` (of type ``kind``, if given), or None.

        The copy is a snapshot for reading; change the map through :meth:`update`.
        """
        kinds = self.entries.get(key)
        if not kinds:
            return None
        found = kinds.get(_tag(_crdt_class(kind))) if kind is not None else kinds[min(kinds)]
        if found is None:
            return None
        copy = NESTED.copy(found)
        copy.context = self.context.copy()
        return typing.cast("C", copy)

    def kinds(self, key: K) -> list[type[Crdt]]:
        """The CRDT types stored under ``key`` (more than one only after concurrent
        updates with different types)."""
        return [type(v) for _, v in sorted(self.entries.get(key, {}).items())]

    def update(self, key: K, kind: type[C], fn: Callable[[C], C]) -> ORMap[K]:
        """Apply a mutation to the ``kind`` value under ``key``; return the map's delta.

        ``fn`` receives the current value (a new empty one if the key is absent) and must
        return the delta of the mutator it calls, e.g. ``lambda s: s.add(x, replica=r)``.
        Join deltas with ``|`` to make several changes in one update. The value handed to
        ``fn`` is only valid during the call. Changes ``fn`` made before raising stay in
        the map without a delta (an agent handler that raises is rolled back whole).

        Raises:
            TypeError: ``kind`` is not a CRDT type or ``fn`` returned something else.
        """
        cls = _crdt_class(kind)
        tag = _tag(cls)
        kinds = self.entries.get(key)
        found = kinds.get(tag) if kinds else None
        nested: Crdt = cls() if found is None else found
        # Share the map's context so the nested mutator mints map-wide unique dots.
        nested.context = self.context
        try:
            delta = fn(typing.cast("C", nested))
        finally:
            nested.context = CausalContext()
        if type(delta) is not cls:
            raise TypeError(
                f"ORMap.update: fn must return the {cls.__name__} delta of its mutation, "
                f"got {type(delta).__name__}"
            )
        if NESTED.is_empty(nested):
            if kinds is not None:
                kinds.pop(tag, None)
                if not kinds:
                    del self.entries[key]
        else:
            self.entries.setdefault(key, {})[tag] = typing.cast("Nested", nested)
        ctx, delta.context = delta.context, CausalContext()
        entries = {} if NESTED.is_empty(delta) else {key: {tag: typing.cast("Nested", delta)}}
        return ORMap(entries=entries, context=ctx)

    def remove(self, key: K) -> ORMap[K]:
        """Remove ``key`` (every update to it this replica has seen); return the delta."""
        kinds = self.entries.pop(key, None)
        return self._removal(d for v in (kinds or {}).values() for d in NESTED.dots(v))


class LWWMap(Keyed[K], Generic[K, V], tag="lwwmap"):
    """A map of plain values where the latest write per key wins: settings, a routing
    table, last-known positions.

        m = LWWMap[str, int]()
        m.set("x", 1, replica="n1")
        m.value                                 # {"x": 1}

    A remove deletes the writes this replica has seen; a concurrent write wins over it.
    """

    entries: dict[K, dict[Dot, tuple[int, V]]] = msgspec.field(default_factory=dict)
    _ops = DotMap(DOTFUN)

    @property
    def value(self) -> dict[K, V]:
        """Each key's winning value."""
        return {k: _winning(writes) for k, writes in self.entries.items()}

    def get(self, key: K, default: V | None = None) -> V | None:
        """The winning value under ``key``, or ``default``."""
        writes = self.entries.get(key)
        return default if not writes else _winning(writes)

    def set(self, key: K, value: V, *, replica: str, timestamp: int | None = None) -> LWWMap[K, V]:
        """Write ``key = value`` on behalf of ``replica``; return the delta."""
        ts = _check_timestamp(timestamp)
        dot = self._mint(replica)
        return self._apply({key: {dot: (ts, value)}}, [dot, *self.entries.get(key, ())])

    def remove(self, key: K) -> LWWMap[K, V]:
        """Remove ``key`` (the writes this replica has seen); return the delta."""
        writes = self.entries.pop(key, None)
        return self._removal(writes or ())


def _winning(writes: dict[Dot, tuple[int, V]]) -> V:
    won = lww_winner(writes)
    assert won is not None  # DotMaps drop empty entries
    return won[1]
