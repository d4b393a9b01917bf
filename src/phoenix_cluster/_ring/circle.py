"""The circle of a hash ring: every member's vnode points in one sorted list, built from
scratch, changed by one member at a time, and measured by arc length.

A circle is two parallel lists: ``points`` (every vnode point, sorted by point, then by
member name where two points collide) and ``owners`` (``owners[i]`` is the member at
``points[i]``). Adding or removing a member bisects only that member's points in or out
and copies the runs in between as slices, so the result is the list a build from scratch
gives (``tests/ring`` checks it). :class:`~.ring.HashRing` looks keys up in it.

Pure: no I/O, no clock, no asyncio.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from .hashing import HASH_SPACE, stable_hash64

__all__ = ["RingStatistics", "arc_lengths", "build_circle", "check_name",
           "circle_statistics", "vnode_points", "with_points", "without_points"]

@dataclass(frozen=True, slots=True)
class RingStatistics:
    """How the ring splits the hash space, measured exactly by arc length.

    Attributes:
        version: the ring's version.
        members: number of members.
        vnodes: virtual nodes per member.
        points: points on the circle (``members * vnodes``).
        min_share: the smallest member's fraction of the hash space (0.0 when empty).
        max_share: the largest member's fraction of the hash space (0.0 when empty).
        max_over_mean: ``max_share`` divided by the mean share ``1 / members``: the
            imbalance. 1.0 is perfect; 0.0 when empty.
    """

    version: int
    members: int
    vnodes: int
    points: int
    min_share: float
    max_share: float
    max_over_mean: float


Circle = tuple[list[int], list[str]]
"""``(points, owners)``: the sorted points and the member at each."""


def vnode_points(member: str, vnodes: int) -> list[int]:
    """``member``'s own points, sorted: ``stable_hash64(f"{member}#{i}")`` for each vnode."""
    return sorted(stable_hash64(f"{member}#{i}") for i in range(vnodes))


def check_name(member: object) -> str:
    """``member``, if it is a non-empty str.

    Raises:
        ValueError: it is not.
    """
    if not isinstance(member, str) or not member:
        raise ValueError(f"ring member names must be non-empty str, got {member!r}")
    return member


def build_circle(members: Iterable[str], vnodes: int) -> tuple[dict[str, list[int]], Circle]:
    """Every member's own points, and the circle of all of them, built from scratch.

    Raises:
        ValueError: a member name is not a non-empty str.
    """
    own = {check_name(m): vnode_points(m, vnodes) for m in members}
    entries = sorted((p, m) for m, points in own.items() for p in points)
    return own, ([p for p, _ in entries], [m for _, m in entries])


def with_points(points: list[int], owners: list[str], member: str, mine: list[int]) -> Circle:
    """The circle with ``member``'s points ``mine`` (sorted) bisected in."""
    size = len(points)
    new_points: list[int] = []
    new_owners: list[str] = []
    lo = 0
    for p in mine:
        i = bisect_left(points, p, lo)
        while i < size and points[i] == p and owners[i] < member:
            i += 1  # a collision: order equal points by member name
        new_points += points[lo:i]
        new_owners += owners[lo:i]
        new_points.append(p)
        new_owners.append(member)
        lo = i
    new_points += points[lo:]
    new_owners += owners[lo:]
    return new_points, new_owners


def without_points(points: list[int], owners: list[str], member: str,
                   mine: list[int]) -> Circle:
    """The circle with ``member``'s points ``mine`` (sorted) bisected out."""
    new_points: list[int] = []
    new_owners: list[str] = []
    lo = 0
    for p in mine:
        i = bisect_left(points, p, lo)
        while owners[i] != member:
            i += 1  # a collision: another member's point equal to ours
        new_points += points[lo:i]
        new_owners += owners[lo:i]
        lo = i + 1
    new_points += points[lo:]
    new_owners += owners[lo:]
    return new_points, new_owners


def arc_lengths(members: Iterable[str], points: list[int], owners: list[str]) -> dict[str, int]:
    """The exact length of the hash space each member owns (0 for one without points)."""
    arcs = dict.fromkeys(members, 0)
    if points:
        # The point at index i owns the half-open arc (points[i - 1], points[i]];
        # the first point also owns the wrap-around arc past the last one.
        arcs[owners[0]] += points[0] + HASH_SPACE - points[-1]
        for i in range(1, len(points)):
            arcs[owners[i]] += points[i] - points[i - 1]
    return arcs


def circle_statistics(version: int, vnodes: int, arcs: dict[str, int],
                      points: int) -> RingStatistics:
    """The counts and balance of a ring whose members own ``arcs`` (:func:`arc_lengths`)."""
    n = len(arcs)
    lo = min(arcs.values(), default=0) / HASH_SPACE
    hi = max(arcs.values(), default=0) / HASH_SPACE
    return RingStatistics(
        version=version,
        members=n,
        vnodes=vnodes,
        points=points,
        min_share=lo,
        max_share=hi,
        max_over_mean=hi * n,
    )
