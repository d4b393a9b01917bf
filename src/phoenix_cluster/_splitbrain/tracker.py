"""What a split-brain decision depends on, and since when it has not changed.

:class:`PartitionTracker` turns the membership's snapshots into the inputs of a decision:
the members that count (the newest incarnation of each name, not ``left``, not removed
by an earlier ``keep``), which of them this node reaches, the broken links between them,
and the :class:`~.view.PartitionView` a strategy reads. Any change of those inputs
restarts the stability timer (``changed_at``). Members removed by a ``keep`` keep
counting as the other side until things have been calm (nothing new unreachable) for
``stable_after_s``: a cut-off node learns of its losses one suspicion at a time, and if
each ``keep`` forgot the members it removed it would win 4|1, then 3|1, ..., then a 1|1
tie, and never down. :class:`~.resolver.SplitBrainResolver` decides from it.

Pure: no I/O, no asyncio, no clock (every method that needs the time takes ``now``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from phoenix_cluster._membership.snapshot import MembershipSnapshot

from .view import PartitionView, ViewMember

__all__ = ["Inputs", "PartitionTracker"]


@dataclass(frozen=True, slots=True)
class Inputs:
    """The part of the membership a decision depends on; a change restarts the timer."""

    reachable: frozenset[str]
    unreachable: frozenset[str]
    broken_links: frozenset[tuple[str, str]]
    settled: frozenset[str] = frozenset()
    """Unreachable members an earlier ``keep`` already removed: they still count as the
    other side (see :class:`PartitionTracker`) but do not call for a new decision by
    themselves."""

    @property
    def troubled(self) -> bool:
        return bool(self.unreachable - self.settled or self.broken_links)


class PartitionTracker:
    """The inputs of a decision for ``self_name``, rebuilt from every snapshot.

    Args:
        self_name: this node's name as it appears in the snapshots.
        stable_after_s: how long things must be calm before removed members stop
            counting as the other side.
        now: the current time (the timer starts here).
    """

    def __init__(self, self_name: str, stable_after_s: float, now: float) -> None:
        self.self_name = self_name
        self.stable_after_s = stable_after_s
        self.snapshot: MembershipSnapshot | None = None
        self._up_since: dict[str, float] = {}
        self._links: frozenset[tuple[str, str]] = frozenset()
        self.removed: dict[str, int] = {}  # name -> highest removed incarnation
        # Removed members that still count as the other side (see the module docstring).
        # They stop counting once things have been calm (nothing new unreachable) for
        # stable_after.
        self._counting: set[str] = set()
        self.calm_since: float | None = None
        self.inputs: Inputs | None = None
        self.view: PartitionView | None = None
        self.changed_at = now
        self.timer_resets = 0

    @property
    def troubled(self) -> bool:
        """Whether members are unreachable (not only settled ones), or links broken."""
        return self.inputs is not None and self.inputs.troubled

    def update(self, snapshot: MembershipSnapshot, up_since: Mapping[str, float] | None,
               broken_links: Iterable[tuple[str, str]], now: float) -> None:
        """Take the membership's latest view; older snapshots than the last are ignored."""
        if self.snapshot is not None and snapshot.version < self.snapshot.version:
            return
        self.snapshot = snapshot
        if up_since is not None:
            self._up_since.update(up_since)
        self._links = frozenset(broken_links)
        self.rebuild(now)

    def rebuild(self, now: float, *, after_decision: bool = False) -> None:
        """Recompute the inputs and the view; a change restarts the timer (and counts as
        a reset unless a decision caused it)."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        latest: dict[str, ViewMember] = {}
        statuses: dict[str, str] = {}
        incarnations: dict[str, int] = {}
        for m in snapshot.members:
            if m.name in incarnations and m.incarnation <= incarnations[m.name]:
                continue  # keep the newest incarnation of each name
            incarnations[m.name] = m.incarnation
            statuses[m.name] = m.status
            latest[m.name] = ViewMember(
                m.name, m.address, m.role, self._up_since.get(m.name, float(m.incarnation))
            )
        for name, incarnation in incarnations.items():
            removed = self.removed.get(name)
            if removed is not None and incarnation > removed:
                del self.removed[name]  # a newer incarnation: a fresh member
                self._counting.discard(name)
        counted = {n for n in self._counting if n in latest and statuses[n] != "left"}
        live = {
            name: member
            for name, member in latest.items()
            if statuses[name] != "left"
            and (name not in self.removed or name == self.self_name or name in counted)
        }
        if self.self_name not in live:
            inputs, view = None, None  # not joined yet, or leaving: nothing to decide
        else:
            reachable = frozenset(n for n in live if n == self.self_name
                                  or (statuses[n] == "alive" and n not in counted))
            links = frozenset((a, b) for a, b in self._links
                              if a in live and b in live and a != b
                              and a not in counted and b not in counted)
            inputs = Inputs(reachable, frozenset(live) - reachable, links,
                            frozenset(counted))
            view = PartitionView(
                self.self_name, tuple(live.values()), inputs.reachable, inputs.unreachable, links
            )
        if inputs != self.inputs:
            if self.inputs is not None and self.inputs.troubled and not after_decision:
                self.timer_resets += 1
            self.inputs = inputs
            self.changed_at = now
        self.view = view

    def settle(self, now: float) -> bool:
        """While nothing new is unreachable but removed members still count: let them go
        once it has been calm for ``stable_after_s``. ``True`` while that is the case
        (there is nothing to decide then)."""
        inputs = self.inputs
        if inputs is None or inputs.troubled or not self._counting:
            return False
        if self.calm_since is None:
            self.calm_since = now
        elif now - self.calm_since >= self.stable_after_s:
            self._counting.clear()  # calm again: removed members stop counting
            self.calm_since = None
            self.rebuild(now, after_decision=True)
        return True

    def remove(self, names: Iterable[str], now: float) -> None:
        """A ``keep`` decision removed ``names`` (their current incarnations)."""
        snapshot = self.snapshot
        incarnations = {m.name: m.incarnation for m in snapshot.members} if snapshot else {}
        for name in names:
            if name != self.self_name:
                self.removed[name] = max(incarnations.get(name, 0), self.removed.get(name, 0))
                self._counting.add(name)
        self.calm_since = None
        self.rebuild(now, after_decision=True)

    def restart(self, now: float) -> None:
        """Measure stability again from ``now`` (the view predates a pause)."""
        self.changed_at = now
        if self.troubled:
            self.timer_resets += 1
