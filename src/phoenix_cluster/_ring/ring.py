"""Consistent-hash ring: which member owns a key hash, and which members hold its replicas.

Each member is hashed onto a 64-bit circle at ``vnodes`` points:
``stable_hash64(f"{member}#{i}")`` for ``i`` in ``range(vnodes)``. A key hash belongs to
the first point at or after it, walking clockwise and wrapping past ``2**64 - 1`` to 0;
its replicas are the first ``n`` distinct members met on that walk. Lookups bisect one
sorted list of ints, so they cost O(log(members * vnodes)).

A :class:`HashRing` is a value: it never changes after it is built.
:meth:`HashRing.with_member` and :meth:`HashRing.without_member` return a new ring with
the next ``version``. They reuse the other members' points, hashing only a joining
member (``circle.py`` builds and edits the sorted points and measures their arcs; this
module looks keys up in them). The result is identical to a ring built from scratch
from the same members, which the tests check.

Collisions between two members' points (chance about ``points**2 / 2**65``: 7e-10 at
1,000 members) are resolved deterministically: both points stay, ordered by member name,
and the lexicographically smaller name owns the arc. A member's name cannot make another
member's vnode label (``"a#1"`` at ``i = 0`` is ``"a#1#0"``, never ``"a#<digits>"``).

Pure: no I/O, no clock, no asyncio. ``docs/design/ring.md`` has the measured balance.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping

from phoenix_cluster._membership.snapshot import MembershipSnapshot, MemberStatus
from phoenix_cluster.errors import PhoenixInternalError

from .circle import (
    RingStatistics,
    arc_lengths,
    build_circle,
    check_name,
    circle_statistics,
    vnode_points,
    with_points,
    without_points,
)
from .hashing import HASH_SPACE

__all__ = ["DEFAULT_VNODES", "EmptyRing", "HashRing"]

DEFAULT_VNODES = 160
"""Virtual nodes per member. More points even out the shares (relative spread of one
member's share is about ``1 / sqrt(vnodes)``) at the cost of memory and build time."""


class EmptyRing(LookupError):
    """The ring has no members, so no member can own the key.

    You get this from :meth:`HashRing.owner` and friends before the first member joined
    or after the last one left. Callers treat it like an unreachable owner: wait for
    membership, or fail the call as unavailable.
    """


def _check_hash(key_hash: int) -> None:
    if not 0 <= key_hash < HASH_SPACE:
        raise ValueError(f"key hash {key_hash!r} is outside [0, 2**64)")


_RUN_CACHE_LIMIT = 8
"""Replica lists of fewer members than this are remembered per point (a list of every
member, as a capability lookup asks for, is not: points x members would be kept)."""


class HashRing:
    """An immutable consistent-hash ring over member names.

    Args:
        members: member names (duplicates are ignored; order does not matter).
        vnodes: virtual nodes per member, at least 1.
        version: the ring's version; :meth:`with_member` / :meth:`without_member` return
            ``version + 1``. Use the membership snapshot's version (see
            :meth:`from_snapshot`) so consumers can compare.

    Raises:
        ValueError: a member name is not a non-empty str, or ``vnodes < 1``.
        TypeError: ``members`` is a single str (which would iterate its characters).

    Two rings are equal when they place every key the same way (same members, same
    ``vnodes``); ``version`` is not compared.
    """

    __slots__ = ("_arcs", "_members", "_names", "_owners", "_points", "_runs", "_version",
                 "_vnodes")

    _members: dict[str, list[int]]  # member -> its own vnode points, sorted
    _names: tuple[str, ...]  # sorted member names
    _vnodes: int
    _version: int
    _points: list[int]  # every vnode point, sorted by (point, member)
    _owners: list[str]  # _owners[i] is the member at _points[i]
    _arcs: dict[str, int] | None  # exact arc length per member, computed on first use
    _runs: dict[int, tuple[str, ...]]  # point index * 8 + n -> replicas(n) from there

    def __init__(
        self, members: Iterable[str] = (), vnodes: int = DEFAULT_VNODES, *, version: int = 0
    ) -> None:
        if isinstance(members, str):
            raise TypeError("members must be an iterable of names, not a single str")
        if not isinstance(vnodes, int) or vnodes < 1:
            raise ValueError(f"vnodes must be an int >= 1, got {vnodes!r}")
        own, (points, owners) = build_circle(members, vnodes)
        self._init(own, vnodes, version, points, owners)

    def _init(
        self,
        members: dict[str, list[int]],
        vnodes: int,
        version: int,
        points: list[int],
        owners: list[str],
    ) -> None:
        self._members = members
        self._names = tuple(sorted(members))
        self._vnodes = vnodes
        self._version = version
        self._points = points
        self._owners = owners
        self._arcs = None
        self._runs = {}

    def _derived(
        self,
        members: dict[str, list[int]],
        version: int | None,
        points: list[int],
        owners: list[str],
    ) -> HashRing:
        ring = type(self).__new__(type(self))
        ring._init(
            members,
            self._vnodes,
            self._version + 1 if version is None else version,
            points,
            owners,
        )
        return ring

    @classmethod
    def from_snapshot(
        cls,
        snapshot: MembershipSnapshot,
        vnodes: int = DEFAULT_VNODES,
        *,
        statuses: Collection[MemberStatus] = ("alive", "suspect"),
    ) -> HashRing:
        """Build the ring of a membership snapshot, at the snapshot's version.

        Only ``role="member"`` nodes host agents, so client nodes are left out.

        Args:
            snapshot: the membership view.
            vnodes: virtual nodes per member.
            statuses: which member states place a node on the ring. Suspects stay by
                default: a false suspicion then moves no keys, and a real failure moves
                them once, when the member is declared dead.

        Returns:
            A ring whose ``version`` is ``snapshot.version``.
        """
        names = (m.name for m in snapshot.members if m.role == "member" and m.status in statuses)
        return cls(names, vnodes, version=snapshot.version)

    # -- the value ---------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The ring's version (see the class docstring)."""
        return self._version

    @property
    def vnodes(self) -> int:
        """Virtual nodes per member."""
        return self._vnodes

    @property
    def members(self) -> tuple[str, ...]:
        """The member names, sorted."""
        return self._names

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashRing):
            return NotImplemented
        return self._vnodes == other._vnodes and self._members.keys() == other._members.keys()

    def __hash__(self) -> int:
        return hash((self._vnodes, self._names))

    def __repr__(self) -> str:
        names = self._names
        shown = ", ".join(names[:5]) + (f", ... (+{len(names) - 5})" if len(names) > 5 else "")
        return (
            f"<HashRing v{self._version} [{len(names)} members x {self._vnodes} vnodes"
            f"{': ' + shown if names else ''}]>"
        )

    # -- lookups -------------------------------------------------------------------------

    def owner(self, key_hash: int) -> str:
        """The member that owns ``key_hash``: the first point at or after it, clockwise.

        Args:
            key_hash: an int in ``[0, 2**64)``, from :func:`~.hashing.key_hash`.

        Returns:
            The owning member's name; always ``replicas(key_hash, n)[0]``.

        Raises:
            EmptyRing: the ring has no members.
            ValueError: ``key_hash`` is outside ``[0, 2**64)``.
        """
        points = self._points
        if not points:
            raise EmptyRing(f"the hash ring (v{self._version}) has no members to own keys")
        if not 0 <= key_hash < HASH_SPACE:
            raise ValueError(f"key hash {key_hash!r} is outside [0, 2**64)")
        i = bisect_left(points, key_hash)
        return self._owners[i] if i < len(points) else self._owners[0]

    def replicas(self, key_hash: int, n: int) -> list[str]:
        """The first ``n`` distinct members clockwise from ``key_hash``, owner first.

        Args:
            key_hash: an int in ``[0, 2**64)``.
            n: how many replicas, at least 1.

        Returns:
            ``min(n, len(self))`` distinct member names; the first is :meth:`owner`.

        Raises:
            EmptyRing: the ring has no members.
            ValueError: ``n < 1`` or ``key_hash`` is outside ``[0, 2**64)``.
        """
        if n < 1:
            raise ValueError(f"replica count must be >= 1, got {n}")
        points = self._points
        if not points:
            raise EmptyRing(f"the hash ring (v{self._version}) has no members to own keys")
        _check_hash(key_hash)
        want = min(n, len(self._members))
        i = bisect_left(points, key_hash)
        if want < _RUN_CACHE_LIMIT:
            # Every key hash between two points has the same replicas: remembered per
            # point (a registry operation or a call asks for a few names' replicas on
            # the same ring again and again).
            run = self._runs.get(i * _RUN_CACHE_LIMIT + want)
            if run is None:
                run = self._runs[i * _RUN_CACHE_LIMIT + want] = tuple(
                    self._walk(i, want))
            return list(run)
        return self._walk(i, want)

    def _walk(self, i: int, want: int) -> list[str]:
        """The first ``want`` distinct members from point index ``i`` on, clockwise."""
        owners = self._owners
        total = len(owners)
        found: list[str] = []
        # Terminates: every member has at least one point, so one lap meets all of them.
        while len(found) < want:
            if i == total:
                i = 0
            member = owners[i]
            if member not in found:
                found.append(member)
            i += 1
        return found

    def owner_bounded(self, key_hash: int, loads: Mapping[str, int], c: float = 1.25) -> str:
        """The owner under consistent hashing with bounded loads (Mirrokni et al., 2018).

        Walks clockwise from ``key_hash`` like :meth:`owner`, skipping members whose load
        is already at the capacity ``ceil(c * (total + 1) / members)``, where ``total`` is
        the sum of the members' loads. Placing one item at a time this way, no member
        ever holds more than ``ceil(c * items / members)``, and keys still move little
        when membership changes (the paper bounds it for ``c > 1``).

        Args:
            key_hash: an int in ``[0, 2**64)``.
            loads: current load (e.g. active agents) per member; missing members count 0,
                names not on the ring are ignored.
            c: the balance factor, >= 1. Lower is more even but moves more keys.

        Returns:
            The chosen member; the caller adds 1 to its load when it places the item.

        Raises:
            EmptyRing: the ring has no members.
            ValueError: ``c`` is not a finite number >= 1, or ``key_hash`` is out of range.
        """
        if not (math.isfinite(c) and c >= 1.0):
            raise ValueError(f"bounded-load factor c must be a finite number >= 1, got {c!r}")
        points, owners = self._points, self._owners
        if not points:
            raise EmptyRing(f"the hash ring (v{self._version}) has no members to own keys")
        _check_hash(key_hash)
        total = sum(loads.get(m, 0) for m in self._members)
        capacity = math.ceil(c * (total + 1) / len(self._members))
        start = bisect_left(points, key_hash)
        size = len(points)
        # Loads sum to total < members * capacity, so some member is below capacity and
        # one lap finds it.
        for step in range(size):
            member = owners[(start + step) % size]
            if loads.get(member, 0) < capacity:
                return member
        raise PhoenixInternalError(
            f"bounded-load walk found no member under capacity {capacity} (loads {loads!r})"
        )

    # -- changes -------------------------------------------------------------------------

    def with_member(self, member: str, *, version: int | None = None) -> HashRing:
        """A ring with ``member`` added; ``self`` if it is already a member.

        Only the new member's points are hashed. The others are reused: the new points
        are bisected into the sorted list and the runs between them copied as slices.

        Args:
            member: the joining member's name.
            version: the new ring's version; defaults to ``self.version + 1``.

        Raises:
            ValueError: ``member`` is not a non-empty str.
        """
        check_name(member)
        if member in self._members:
            return self
        mine = vnode_points(member, self._vnodes)
        points, owners = with_points(self._points, self._owners, member, mine)
        return self._derived({**self._members, member: mine}, version, points, owners)

    def without_member(self, member: str, *, version: int | None = None) -> HashRing:
        """A ring with ``member`` removed; ``self`` if it is not a member.

        Nothing is hashed: the member's own points are bisected out of the sorted list.

        Args:
            member: the leaving member's name.
            version: the new ring's version; defaults to ``self.version + 1``.
        """
        mine = self._members.get(member)
        if mine is None:
            return self
        points, owners = without_points(self._points, self._owners, member, mine)
        members = {m: own for m, own in self._members.items() if m != member}
        return self._derived(members, version, points, owners)

    # -- shares --------------------------------------------------------------------------

    def _arc_lengths(self) -> dict[str, int]:
        if self._arcs is None:
            self._arcs = arc_lengths(self._members, self._points, self._owners)
        return self._arcs

    def share(self, member: str) -> float:
        """The fraction of the hash space ``member`` owns, by exact arc length.

        Returns:
            A float in ``[0, 1]``; 0.0 for a name that is not a member.
        """
        return self._arc_lengths().get(member, 0) / HASH_SPACE

    def shares(self) -> dict[str, float]:
        """Every member's fraction of the hash space, by exact arc length."""
        return {m: arc / HASH_SPACE for m, arc in sorted(self._arc_lengths().items())}

    def statistics(self) -> RingStatistics:
        """Counts and the exact balance of the ring (the arcs are measured once)."""
        return circle_statistics(self._version, self._vnodes, self._arc_lengths(),
                                 len(self._points))
