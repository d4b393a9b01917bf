"""The causal CRDT base: join, deltas, inflation checks and digest-driven anti-entropy.

Every type in this package is a msgspec Struct holding ``entries`` (a dot store, see
:mod:`.stores`) and ``context`` (the dots it has seen). Mutators mint a fresh dot, build a
delta (itself a state of the same type), join it into the value and return it; shipping
that delta to another replica and joining it there has the same effect as shipping the
whole state.

Anti-entropy uses the join decomposition of a state into irreducible pieces, one per dot:
a live dot with its value, or a seen-and-removed dot. A peer describes itself with a
:class:`Digest` (the dots it has seen and those still live); the minimal delta it lacks is
the join of our pieces it does not already cover.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, ClassVar, Generic, Self, TypeVar

import msgspec

from .dots import CausalContext, Dot
from .stores import Keep, StoreOps

__all__ = ["NESTED", "Crdt", "Digest", "Keyed"]

K = TypeVar("K", bound=Hashable)


class Digest(msgspec.Struct, omit_defaults=True):
    """What a replica has: the dots it has seen, and those still live in its store.

    Send it to a peer; the peer answers with :meth:`Crdt.delta_for`.
    """

    context: CausalContext = msgspec.field(default_factory=CausalContext)
    live: CausalContext = msgspec.field(default_factory=CausalContext)


class Crdt(msgspec.Struct, tag_field="crdt", omit_defaults=True, repr_omit_defaults=True):
    """Base class of every CRDT type: a dot store plus the causal context it has seen.

    Values are mutable msgspec Structs: they encode to msgpack (``msgspec.msgpack.encode``)
    and decode with ``msgspec.msgpack.decode(data, type=ORSet[str])`` or
    ``msgspec.convert(builtins, ORSet[str])``. Two values compare equal when they hold the
    same state.
    """

    context: CausalContext = msgspec.field(default_factory=CausalContext)
    entries: Any = None  # each type redeclares it with its store's shape

    _ops: ClassVar[StoreOps[Any]]

    # -- reading ------------------------------------------------------------------

    @property
    def value(self) -> Any:  # pragma: no cover - every type overrides it
        """The plain Python value this CRDT currently represents."""
        raise NotImplementedError

    def is_bottom(self) -> bool:
        """Whether this is the empty state (a no-op delta)."""
        return self._ops.is_empty(self.entries) and not self.context

    def dots(self) -> Iterable[Dot]:
        """The live dots of the store."""
        return self._ops.dots(self.entries)

    # -- joining ------------------------------------------------------------------

    def merge(self, other: Self) -> bool:
        """Join ``other`` (a full state or a delta) into this value, in place.

        Returns:
            Whether this value changed (``other`` was not already included).

        Raises:
            TypeError: ``other`` is not the same CRDT type.
        """
        if type(other) is not type(self):
            raise TypeError(
                f"cannot merge {type(other).__name__} into {type(self).__name__}"
            )
        self.entries, lost = self._ops.join(
            self.entries, self.context, other.entries, other.context
        )
        grew = self.context.merge(other.context)
        return grew or lost

    def __or__(self, other: Self) -> Self:
        """The join of two values, as a new value."""
        joined = self.copy()
        joined.merge(other)
        return joined

    def copy(self) -> Self:
        """An independent copy (values inside registers are shared: treat them as
        immutable)."""
        return type(self)(entries=self._ops.copy(self.entries), context=self.context.copy())

    def leq(self, other: Self) -> bool:
        """Whether ``other`` already includes this state (``self ⊔ other == other``)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot compare {type(other).__name__} with {type(self).__name__}")
        if not self.context.issubset(other.context):
            return False
        # Every dot we have seen and dropped must be dropped there too.
        mine = set(self.dots())
        return all(d in mine or d not in self.context for d in other.dots())

    # -- anti-entropy -------------------------------------------------------------

    def digest(self) -> Digest:
        """This replica's summary for anti-entropy (send it to a peer)."""
        return Digest(context=self.context.copy(), live=CausalContext.from_dots(self.dots()))

    def delta_for(self, digest: Digest) -> Self:
        """The smallest delta that brings the replica that sent ``digest`` up to date.

        Joining the result into that replica gives it everything this value has: the
        adds it has not seen, and the removals of dots it still holds. Per replica id, the
        delta either lists the missing dots one by one or, when that would be longer,
        states this replica's whole range and resends the few live values both sides
        share (a counter with a million increments stays one dot).
        """
        theirs, their_live = digest.context, digest.live
        mine = set(self.dots())
        by_replica: dict[str, list[Dot]] = {}
        for d in mine:
            by_replica.setdefault(d[0], []).append(d)
        ctx = CausalContext()
        whole: set[str] = set()
        for replica in self.context.replicas():
            shared = sum(1 for d in by_replica.get(replica, ()) if d in their_live)
            missing = self.context.missing_from(theirs, replica, shared)
            if missing is None:
                whole.add(replica)
                ctx.merge(self.context.of_replica(replica))
            else:
                for d in missing:
                    ctx.add(d)
        for d in their_live.dots():
            if d[0] not in whole and d in self.context and d not in mine:
                ctx.add(d)  # we removed it; they still hold it
        entries = self._ops.restrict(
            self.entries, lambda d: d not in theirs or (d[0] in whole and d in their_live)
        )
        return type(self)(entries=entries, context=ctx)

    def decompose(self) -> list[Self]:
        """The join-irreducible pieces of this state, one per dot it has seen.

        Their join is this state. Meant for tests and inspection: it enumerates every dot
        of the context.
        """
        mine = set(self.dots())
        pieces = [
            type(self)(
                entries=self._ops.restrict(self.entries, _only(d)),
                context=CausalContext.from_dots([d]),
            )
            for d in mine
        ]
        pieces.extend(
            type(self)(context=CausalContext.from_dots([d]))
            for d in self.context.dots()
            if d not in mine
        )
        return pieces

    # -- helpers for mutators -----------------------------------------------------

    def _mint(self, replica: str) -> Dot:
        return self.context.next_dot(replica)

    def _apply(self, entries: Any, dots: Iterable[Dot]) -> Self:
        """Build the delta ``(entries, dots)``, join it here and return it."""
        delta = type(self)(entries=entries, context=CausalContext.from_dots(dots))
        self.merge(delta)
        return delta

    def _removal(self, dots: Iterable[Dot]) -> Self:
        """The delta of a removal the caller already made here: those dots, now gone.

        (Local removals skip the join: the caller knows where the dots were.)
        """
        return type(self)(context=CausalContext.from_dots(dots))


class Keyed(Crdt, Generic[K]):
    """A CRDT whose store is keyed by element or map key: ``in``, ``iter`` and ``len``
    read those keys."""

    entries: dict[K, Any] = msgspec.field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _only(dot: Dot) -> Callable[[Dot], bool]:
    return lambda d: d == dot


class _Nested:
    """A whole CRDT object as the store under a DotMap key (its own context unused).

    Here rather than in ``stores.py``, which ``Crdt`` itself imports.
    """

    def join(self, a: Crdt, ca: CausalContext, b: Crdt, cb: CausalContext) -> tuple[Crdt, bool]:
        if type(a) is not type(b):  # pragma: no cover - DotMaps key nested values by tag
            raise TypeError(f"cannot join {type(a).__name__} with {type(b).__name__}")
        a.entries, lost = a._ops.join(a.entries, ca, b.entries, cb)
        return a, lost

    def discard(self, a: Crdt, cb: CausalContext) -> tuple[Crdt, bool]:
        a.entries, lost = a._ops.discard(a.entries, cb)
        return a, lost

    def restrict(self, a: Crdt, keep: Keep) -> Crdt:
        return type(a)(entries=a._ops.restrict(a.entries, keep))

    def copy(self, a: Crdt) -> Crdt:
        return type(a)(entries=a._ops.copy(a.entries))

    def dots(self, a: Crdt) -> Iterable[Dot]:
        return a._ops.dots(a.entries)

    def is_empty(self, a: Crdt) -> bool:
        return a._ops.is_empty(a.entries)


NESTED: StoreOps[Crdt] = _Nested()
