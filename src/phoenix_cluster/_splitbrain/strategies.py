"""Pure split-brain strategies: a :class:`PartitionView` in, a :class:`Decision` out.

I/O-free and deterministic (no asyncio, no clock, no randomness), after Pekko's
``sbr/DowningStrategy.scala`` beside its ``SplitBrainResolver.scala`` actor: the
resolver gathers inputs and acts, these classes only decide, so every case of
``docs/design/splitbrain.md`` is a table-driven unit test.

Every strategy but :class:`DownAll` follows the same frame:

1. Clients never count: only ``role="member"`` members make a majority, a quorum or the
   oldest. A side with no counting member never wins against one that has some.
2. Broken links first: for each known link ``(a, b)`` that fails while others reach both
   ends, the junior endpoint (see :func:`~.view.seniority_key`) downs itself and the rest
   decide without the juniors. This never downs everybody: the most senior endpoint of
   all links is junior in none of them.
3. Then the strategy's own rule on the remaining reachable and unreachable members.

Guarantee: two sides holding the same view of the members (each side's ``unreachable``
being the other's ``reachable``) never both keep under keep-majority, keep-oldest,
static-quorum and lease; under keep-majority and keep-oldest exactly one side keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from .view import AddressKey, Decision, PartitionView, ViewMember, address_key, format_names

__all__ = [
    "STRATEGY_NAMES",
    "Decision",
    "DownAll",
    "KeepMajority",
    "KeepOldest",
    "Lease",
    "LeaseMajority",
    "PartitionView",
    "StaticQuorum",
    "Strategy",
    "ViewMember",
]

STRATEGY_NAMES = ("keep-majority", "static-quorum", "keep-oldest", "lease", "down-all")


class Strategy(Protocol):
    """Decides what this side does about a partition; must be pure and deterministic."""

    @property
    def name(self) -> str:
        """The configuration name, e.g. ``keep-majority``."""
        ...

    def decide(self, view: PartitionView) -> Decision:
        """The decision for ``view``; the same view always gives the same decision."""
        ...


@dataclass(frozen=True, slots=True)
class _Sides:
    """The counting members of each side once broken-link juniors are set aside."""

    here: list[ViewMember]
    there: list[ViewMember]
    juniors: frozenset[str]
    clients: list[str]

    def describe(self) -> str:
        text = (
            f"{len(self.here)} reachable {format_names(m.name for m in self.here)} vs "
            f"{len(self.there)} unreachable {format_names(m.name for m in self.there)}"
        )
        if self.clients:
            text += f" (clients not counted: {format_names(self.clients)})"
        if self.juniors:
            text += f" (leaving over broken links: {format_names(self.juniors)})"
        return text


def _broken_link_verdict(view: PartitionView, name: str) -> Decision | _Sides:
    """Step 1 and 2 of the frame: ``down_self`` for a junior endpoint, else the sides."""
    juniors = view.juniors_of_broken_links()
    if view.self_name in juniors:
        links = sorted(f"{a}<->{b}" for a, b in view.broken_links if view.self_name in (a, b))
        return Decision.down_self(
            f"{name}: broken link {', '.join(links)} (the others reach both ends): "
            f"{view.self_name} is the junior endpoint (members before clients, then older, "
            f"then lower address) and downs itself; the senior endpoint stays"
        )
    here = [m for m in view.counted(view.reachable) if m.name not in juniors]
    there = [m for m in view.counted(view.unreachable) if m.name not in juniors]
    clients = [m.name for m in view.members if not m.counts]
    return _Sides(here, there, juniors, clients)


def _keep(
    view: PartitionView, reason: str, juniors: frozenset[str], tie_break: str = ""
) -> Decision:
    return Decision.keep(reason, view.unreachable | (juniors - {view.self_name}), tie_break)


def _lowest_address(view: PartitionView, sides: _Sides) -> tuple[ViewMember, str]:
    """The member with the lowest address among the counting ones (all, if none count)."""
    pool = sides.here + sides.there
    if not pool:
        pool = [m for m in view.members if m.name not in sides.juniors]
    lowest = min(pool, key=lambda m: (address_key(m.address), m.name))
    side = "this side" if lowest.name in view.reachable else "the other side"
    return lowest, f"lowest address {lowest.address} ({lowest.name}) is on {side}"


@dataclass(frozen=True, slots=True)
class KeepMajority:
    """The side with more counting members survives; on a tie, the side holding the
    member with the lowest address (compared as IP and port, not as names).

    The default: needs no configuration and no external service. Its weak spot is many
    nodes failing at once: if more than half the members crash, the survivors are a
    minority and down themselves too (use static-quorum or lease if that matters).
    """

    name: ClassVar[str] = "keep-majority"

    def decide(self, view: PartitionView) -> Decision:
        sides = _broken_link_verdict(view, self.name)
        if isinstance(sides, Decision):
            return sides
        here, there = len(sides.here), len(sides.there)
        inputs = sides.describe()
        if here > there:
            return _keep(view, f"{self.name}: {inputs}; this side is the majority", sides.juniors)
        if here < there:
            return Decision.down_self(f"{self.name}: {inputs}; this side is the minority")
        lowest, tie_break = _lowest_address(view, sides)
        reason = f"{self.name}: {inputs}; equal sides, {tie_break}"
        if lowest.name in view.reachable:
            return _keep(view, reason, sides.juniors, tie_break)
        return Decision.down_self(reason, tie_break)


@dataclass(frozen=True, slots=True)
class StaticQuorum:
    """A side survives iff it has at least ``quorum_size`` counting members.

    If neither side reaches the quorum, both down. Two sides can never both reach it
    while the cluster has at most ``2 * quorum_size - 1`` counting members; with more
    members than that, every side downs itself on a partition, since the rule could no
    longer tell the sides apart. Set ``quorum_size`` to a majority of the cluster's
    planned size and grow it with the cluster.
    """

    quorum_size: int
    name: ClassVar[str] = "static-quorum"

    def __post_init__(self) -> None:
        if self.quorum_size < 1:
            raise ValueError(f"quorum_size must be at least 1, got {self.quorum_size}")

    def decide(self, view: PartitionView) -> Decision:
        sides = _broken_link_verdict(view, self.name)
        if isinstance(sides, Decision):
            return sides
        total, limit = len(sides.here) + len(sides.there), 2 * self.quorum_size - 1
        inputs = f"quorum {self.quorum_size}, {sides.describe()}"
        if total > limit:
            return Decision.down_self(
                f"{self.name}: {inputs}; {total} members exceed 2 x quorum - 1 = {limit}, "
                f"so both sides could hold a quorum: every side downs (raise quorum_size)"
            )
        if len(sides.here) >= self.quorum_size:
            return _keep(view, f"{self.name}: {inputs}; this side holds the quorum", sides.juniors)
        return Decision.down_self(f"{self.name}: {inputs}; this side is below the quorum")


@dataclass(frozen=True, slots=True)
class KeepOldest:
    """The side holding the oldest counting member survives.

    With ``down_if_alone`` (default), if the oldest member is alone on its side while the
    other side has counting members, the oldest downs itself and the other side survives:
    one crashed or isolated oldest node does not take the cluster with it. Price: in a
    two-member cluster the oldest downs itself whenever it loses the other.
    """

    down_if_alone: bool = True
    name: ClassVar[str] = "keep-oldest"

    def decide(self, view: PartitionView) -> Decision:
        sides = _broken_link_verdict(view, self.name)
        if isinstance(sides, Decision):
            return sides
        inputs = sides.describe()
        if not sides.here and not sides.there:
            lowest, tie_break = _lowest_address(view, sides)
            reason = f"{self.name}: {inputs}; no members, only clients: {tie_break}"
            if lowest.name in view.reachable:
                return _keep(view, reason, sides.juniors, tie_break)
            return Decision.down_self(reason, tie_break)
        oldest = min(sides.here + sides.there, key=_age)
        oldest_here = oldest.name in view.reachable
        with_oldest, other = (sides.here, sides.there) if oldest_here else (sides.there, sides.here)
        where = "this side" if oldest_here else "the other side"
        inputs += f"; oldest {oldest.name} (up since {oldest.up_since:g}) is on {where}"
        alone = self.down_if_alone and len(with_oldest) == 1 and len(other) >= 1
        if alone:
            inputs += " alone, and down_if_alone is set"
        if oldest_here != alone:
            return _keep(view, f"{self.name}: {inputs}; this side survives", sides.juniors)
        return Decision.down_self(f"{self.name}: {inputs}; the other side survives")


def _age(member: ViewMember) -> tuple[float, AddressKey, str]:
    return (member.up_since, address_key(member.address), member.name)


@dataclass(frozen=True, slots=True)
class LeaseMajority:
    """A side survives iff it holds the external lease (etcd lease, Kubernetes Lease).

    The resolver does the I/O: it asks :meth:`lease_owner` for this side's owner id (the
    name of its lowest-address counting member, which every node of the side computes
    alike, so they all hold the same re-entrant lease), waits :meth:`acquire_delay_s`
    (the minority side waits ``acquire_delay_for_minority_s`` so the majority usually
    wins), tries to acquire, and puts the owner in ``view.lease_holder`` if it succeeded.
    A side without counting members never tries. Failure mode: if the lease service is
    unreachable from both sides, both down.
    """

    acquire_delay_for_minority_s: float = 2.0
    name: ClassVar[str] = "lease"

    def lease_owner(self, view: PartitionView) -> str | None:
        """The owner id this side acquires the lease as, or ``None``: do not try."""
        sides = _broken_link_verdict(view, self.name)
        if isinstance(sides, Decision) or not sides.here:
            return None
        return min(sides.here, key=lambda m: (address_key(m.address), m.name)).name

    def acquire_delay_s(self, view: PartitionView) -> float:
        """0 for the side keep-majority would keep, else the minority's head start."""
        return 0.0 if KeepMajority().decide(view).survives else self.acquire_delay_for_minority_s

    def decide(self, view: PartitionView) -> Decision:
        sides = _broken_link_verdict(view, self.name)
        if isinstance(sides, Decision):
            return sides
        owner = self.lease_owner(view)
        inputs = f"{sides.describe()}; lease owner id {owner}, lease holder {view.lease_holder}"
        if owner is None:
            return Decision.down_self(f"{self.name}: {inputs}; no member on this side")
        if view.lease_holder == owner:
            return _keep(view, f"{self.name}: {inputs}; this side holds the lease", sides.juniors)
        return Decision.down_self(f"{self.name}: {inputs}; this side did not get the lease")


Lease = LeaseMajority


@dataclass(frozen=True, slots=True)
class DownAll:
    """Every node downs itself as soon as any member is stably unreachable (or a link is
    broken). For clusters an operator restarts by hand; never more than one side."""

    name: ClassVar[str] = "down-all"

    def decide(self, view: PartitionView) -> Decision:
        return Decision.down_self(
            f"{self.name}: {len(view.reachable)} reachable {format_names(view.reachable)}, "
            f"{len(view.unreachable)} unreachable {format_names(view.unreachable)}, "
            f"{len(view.broken_links)} broken links; every node downs itself"
        )
