"""Dots and causal contexts: the bookkeeping under every CRDT in this package.

A *dot* ``(replica, n)`` names the n-th event a replica minted. A *causal context* is the
set of dots a state has seen, kept compact as a version vector (replica -> every dot
1..n seen) plus a *dot cloud* of the dots seen out of order. The cloud is never folded
into the vector until the gap below it is filled: claiming "seen up to n" for dots never
received is exactly the bug that made delta_crdt_ex drop keys (its issue 65), because a
join then reads "seen and absent" as "removed".

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator
from typing import Annotated

import msgspec

__all__ = ["CausalContext", "Dot", "check_replica"]

Counter = Annotated[int, msgspec.Meta(ge=1)]
Dot = tuple[str, Counter]
"""``(replica id, counter)``: one event, unique across the whole cluster."""


def check_replica(replica: object) -> str:
    """Return ``replica`` if it is a usable replica id.

    Raises:
        TypeError: not a string.
        ValueError: the empty string.
    """
    if not isinstance(replica, str):
        raise TypeError(f"replica id must be a str, got {type(replica).__name__}")
    if not replica:
        raise ValueError("replica id must be a non-empty string")
    return replica


class CausalContext(msgspec.Struct, omit_defaults=True, repr_omit_defaults=True):
    """The set of dots a state has seen: version vector plus dot cloud.

    Kept canonical (each dot stored once, in the vector whenever it extends it), so two
    contexts holding the same dots compare equal.
    """

    vv: dict[str, Counter] = msgspec.field(default_factory=dict)
    cloud: set[Dot] = msgspec.field(default_factory=set)

    @classmethod
    def from_dots(cls, dots: Iterable[Dot]) -> CausalContext:
        """A context holding exactly ``dots``."""
        ctx = cls(cloud=set(dots))
        ctx.compact()
        return ctx

    def __contains__(self, dot: object) -> bool:
        replica, n = typing.cast("Dot", dot)
        return n <= self.vv.get(replica, 0) or dot in self.cloud

    def __len__(self) -> int:
        """How many dots the context holds."""
        return sum(self.vv.values()) + len(self.cloud)

    def __bool__(self) -> bool:
        return bool(self.vv or self.cloud)

    def max_counter(self, replica: str) -> int:
        """The highest counter of ``replica`` seen (0 if none)."""
        top = self.vv.get(replica, 0)
        for r, n in self.cloud:
            if r == replica and n > top:
                top = n
        return top

    def next_dot(self, replica: str) -> Dot:
        """A dot ``replica`` has not used yet in this state (it is not added here)."""
        return (check_replica(replica), self.max_counter(replica) + 1)

    def add(self, dot: Dot) -> None:
        """Record one dot as seen."""
        replica, n = dot
        have = self.vv.get(replica, 0)
        if n == have + 1:
            cloud = self.cloud
            while (replica, n + 1) in cloud:
                n += 1
                cloud.discard((replica, n))
            self.vv[replica] = n
        elif n > have:
            self.cloud.add(dot)

    def merge(self, other: CausalContext) -> bool:
        """Add every dot of ``other``; return whether this context grew.

        Costs O(size of ``other``) plus, only when ``other`` raises a version-vector
        entry while dots wait in the cloud, one pass over the cloud: a replica that
        receives many deltas ahead of a gap must not re-sort its cloud every time.
        """
        before = len(self)
        vv, cloud = self.vv, self.cloud
        raised: set[str] = set()
        for replica, n in other.vv.items():
            if n > vv.get(replica, 0):
                vv[replica] = n
                raised.add(replica)
        touched = set(raised)
        for dot in other.cloud:
            if dot not in self:
                cloud.add(dot)
                touched.add(dot[0])
        if cloud and touched:
            if raised:
                self.cloud = cloud = {d for d in cloud if d[1] > vv.get(d[0], 0)}
            for replica in touched:
                n = vv.get(replica, 0)
                while (replica, n + 1) in cloud:
                    n += 1
                    cloud.discard((replica, n))
                if n:
                    vv[replica] = n
        return len(self) != before

    def compact(self) -> None:
        """Fold cloud dots that extend the version vector into it; drop covered ones."""
        if not self.cloud:
            return
        vv = self.vv
        kept: set[Dot] = set()
        for dot in sorted(self.cloud):  # ascending per replica, so runs fold in one pass
            replica, n = dot
            have = vv.get(replica, 0)
            if n == have + 1:
                vv[replica] = n
            elif n > have:
                kept.add(dot)
        self.cloud = kept

    def copy(self) -> CausalContext:
        """An independent copy."""
        return CausalContext(vv=dict(self.vv), cloud=set(self.cloud))

    def dots(self) -> Iterator[Dot]:
        """Every dot, one by one (as many as ``len(self)``: use on small contexts)."""
        for replica, n in self.vv.items():
            for i in range(1, n + 1):
                yield (replica, i)
        yield from self.cloud

    def replicas(self) -> set[str]:
        """The replicas with at least one dot here."""
        return set(self.vv) | {r for r, _ in self.cloud}

    def issubset(self, other: CausalContext) -> bool:
        """Whether every dot of this context is in ``other``."""
        for replica, n in self.vv.items():
            theirs = other.vv.get(replica, 0)
            if n > theirs and any(
                (replica, i) not in other.cloud for i in range(theirs + 1, n + 1)
            ):
                return False
        return all(dot in other for dot in self.cloud)

    def missing_from(self, other: CausalContext, replica: str, limit: int) -> list[Dot] | None:
        """The dots of ``replica`` here that ``other`` lacks, or None if more than ``limit``.

        Costs O(limit + clouds), however long the version-vector range.
        """
        found: list[Dot] = []
        theirs = other.vv.get(replica, 0)
        for i in range(theirs + 1, self.vv.get(replica, 0) + 1):
            if (replica, i) not in other.cloud:
                found.append((replica, i))
                if len(found) > limit:
                    return None
        for dot in self.cloud:
            if dot[0] == replica and dot not in other:
                found.append(dot)
                if len(found) > limit:
                    return None
        return found

    def of_replica(self, replica: str) -> CausalContext:
        """The part of this context minted by ``replica``."""
        ctx = CausalContext(cloud={d for d in self.cloud if d[0] == replica})
        if replica in self.vv:
            ctx.vv[replica] = self.vv[replica]
        return ctx
