"""The member table: who exists, at which incarnation and status, and the update rules.

:class:`MemberTable` holds this node's record and every other member's, the tombstones
of forgotten ones and the running suspicions, and applies updates (gossiped, merged by
push-pull, or from its own failure detector) by SWIM's rules: a higher incarnation
wins, an equal one with a higher-ranking status (alive < suspect < dead < left); news
about this node is refuted, never applied; a suspicion turns into a death when its
Lifeguard timeout passes. Verdicts judged by their sender (downed lives, deaths declared
by a node cut off) go through :class:`~.verdicts.Verdicts`. Every change is queued for
dissemination and reported as a :class:`~.actions.MemberEvent`.

Pure: no I/O, no asyncio, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import msgspec

from .actions import Action, MemberEvent, MemberEventKind
from .dissemination import Piggyback
from .health import LocalHealth
from .messages import Update, UpdateStatus
from .snapshot import Member
from .timing import Suspicion, SwimSettings, suspicion_timeouts
from .verdicts import SAME_LIFE, Verdicts

__all__ = ["LIVE", "MemberRecord", "MemberTable", "Role"]

Role = Literal["member", "client"]
LIVE = ("alive", "suspect")
_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}


class MemberRecord:
    """One member as this node knows it."""

    __slots__ = ("address", "downed", "incarnation", "name", "role", "since", "status",
                 "suspicion")

    def __init__(self, name: str, address: str, incarnation: int, status: UpdateStatus,
                 role: Role, since: float) -> None:
        self.name = name
        self.address = address
        self.incarnation = incarnation
        self.status: UpdateStatus = status
        self.role: Role = role
        self.since = since
        self.suspicion: Suspicion | None = None
        self.downed = False  # dead by a split-brain decision: this life cannot come back

    def member(self) -> Member:
        return Member(self.name, self.address, self.status, self.incarnation, self.role)

    def update(self, by: str = "") -> Update:
        return Update(self.name, self.address, self.incarnation, self.status, self.role, by,
                      self.downed)


class MemberTable:
    """This node's view of the members, changed only through the update rules.

    Args:
        me: this node's own record.
        settings: timers and limits (suspicion timeouts, forgetting).
        health: this node's Lifeguard health (a sick node suspects later; a refutation
            counts against it).
        piggyback: where every change is queued for dissemination.
        counters: the protocol's counters, shared with the rest of the protocol.
        on_live: called with a member's name when it becomes live (to be probed).
    """

    def __init__(self, me: MemberRecord, *, settings: SwimSettings, health: LocalHealth,
                 piggyback: Piggyback, counters: dict[str, int],
                 on_live: Callable[[str], None]) -> None:
        self.settings = settings
        self.me = me
        self.first_incarnation = me.incarnation  # this process's life starts here
        self.declared_at = -1  # the newest incarnation of ours reported declared dead
        self.records: dict[str, MemberRecord] = {}
        self.tombstones: dict[str, int] = {}
        self.verdicts = Verdicts()
        self.live_others = 0
        # A dict as an ordered set: deaths are declared in suspicion order, the same on
        # every run (a set's order follows the process's string hash seed).
        self.suspects: dict[str, None] = {}
        self.leaving = False
        self.version = 1
        self._members_cache: tuple[int, tuple[Member, ...]] | None = None
        self._health = health
        self._piggyback = piggyback
        self._n = counters
        self._on_live = on_live

    # ------------------------------------------------------------------ views

    def members(self) -> tuple[Member, ...]:
        """Every member known, this node included, sorted by name."""
        cache = self._members_cache
        if cache is not None and cache[0] == self.version:
            return cache[1]
        members = tuple(sorted((r.member() for r in (self.me, *self.records.values())),
                               key=lambda m: m.name))
        self._members_cache = (self.version, members)
        return members

    def member(self, name: str) -> Member | None:
        rec = self.me if name == self.me.name else self.records.get(name)
        return None if rec is None else rec.member()

    def live_count(self) -> int:
        """Alive and suspect members, this node included."""
        return self.live_others + (0 if self.leaving else 1)

    def with_status(self, status: UpdateStatus) -> list[MemberRecord]:
        """The other members with ``status``."""
        return [r for r in self.records.values() if r.status == status]

    def suspicion_deadlines(self) -> Iterator[float]:
        for name in self.suspects:
            suspicion = self.records[name].suspicion
            if suspicion is not None:
                yield suspicion.deadline()

    def changed(self) -> None:
        self.version += 1

    def broadcast(self, rec: MemberRecord, by: str = "") -> None:
        self._piggyback.add(rec.update(by))

    # ------------------------------------------------------------------ timers

    def expire_suspicions(self, now: float, out: list[Action]) -> None:
        """Declare dead the suspects whose suspicion timed out by ``now``."""
        for name in list(self.suspects):
            rec = self.records[name]
            if rec.suspicion is not None and now >= rec.suspicion.deadline():
                self._n["deaths_declared"] += 1
                self._declare(rec, rec.incarnation, "dead", self.me.name, now, out)

    def reap(self, now: float) -> None:
        """Reduce members dead or left for ``forget_after_s`` to tombstones."""
        horizon = now - self.settings.forget_after_s
        self.verdicts.forget_back(horizon)
        for name, rec in list(self.records.items()):
            if rec.status not in LIVE and rec.since <= horizon:
                del self.records[name]
                self.tombstones[name] = rec.incarnation
                self._piggyback.queue.discard(name)
                self.changed()

    # ------------------------------------------------------------------ the rules

    def apply(self, u: Update, now: float, out: list[Action], *,
              suspect_by: str | None = None) -> None:
        """Apply one update; ``suspect_by`` turns it into a suspicion by that member."""
        if suspect_by is not None:
            u = msgspec.structs.replace(u, status="suspect", by=suspect_by)
        if u.name == self.me.name:
            self._about_me(u, out)
            return
        if u.downed and u.status == "dead":
            if not self.verdicts.by_downed(u, self.records):
                self._apply_downed(u, now, out)
            return  # a downed member's verdicts about others do not count
        if u.status in LIVE and self.verdicts.is_downed(u.name, u.incarnation):
            return  # a downed life refuting: it must go, or come back as a new one
        rec = self.records.get(u.name)
        if rec is None:
            self._learn(u, now, out)
            return
        if u.status == "alive":
            if u.incarnation > rec.incarnation:
                self._revive(rec, u, now, out)
            elif (u.incarnation == rec.incarnation and rec.status == "alive"
                  and u.address != rec.address):
                self._n["name_conflicts"] += 1
            return
        if u.incarnation < rec.incarnation:
            return
        if u.status == "suspect":
            if rec.status not in LIVE:
                return  # only a newer alive brings a dead member back
            if rec.status == "suspect" and u.incarnation == rec.incarnation:
                assert rec.suspicion is not None
                if rec.suspicion.confirm(u.by):
                    self.broadcast(rec, by=u.by)  # pass the confirmation on
                return
            self._suspect(rec, u.incarnation, u.by, now, out)
            return
        # dead or left
        if _RANK[u.status] <= _RANK[rec.status] and u.incarnation == rec.incarnation:
            return
        if u.status == "dead" and rec.status in LIVE and self._stale_verdict(u, now):
            # A member cut off from the others declared them dead from its side; after
            # the heal its gossip carries those verdicts to members that never lost
            # them, and each one would move keys and re-elect for a death that did not
            # happen. Check for ourselves instead, as push-pull does: a suspicion the
            # member refutes if it is alive.
            self._n["stale_verdicts"] += 1
            if rec.status == "alive":
                self._suspect(rec, u.incarnation, u.by, now, out)
            return
        if rec.status in ("dead", "left"):
            if u.status == "left" and rec.status == "dead":  # a refinement, not news
                previous = rec.member()
                rec.status, rec.incarnation = "left", u.incarnation
                self.changed()
                out.append(MemberEvent("updated", rec.member(), previous))
            return
        self._declare(rec, u.incarnation, u.status, u.by, now, out)

    def down(self, names: Iterable[str], now: float) -> list[Action]:
        """Declare the current lives of ``names`` dead by a split-brain decision."""
        out: list[Action] = []
        for name in names:
            rec = self.records.get(name)
            if rec is None or name == self.me.name:
                continue
            self._apply_downed(rec.update(self.me.name), now, out)
        return out

    def _stale_verdict(self, u: Update, now: float) -> bool:
        longest = suspicion_timeouts(self.settings, self.live_count())[1]
        return self.verdicts.is_stale(u, self.me.name, self.records, now, longest)

    def _apply_downed(self, u: Update, now: float, out: list[Action]) -> None:
        downed = self.verdicts.downed
        rec = self.records.get(u.name)
        if rec is None:
            before = downed.get(u.name)
            downed[u.name] = max(u.incarnation, before or 0)
            if downed[u.name] != before:
                # No member changed, but subscribers read ``downed()`` (a node that
                # joined after the member died must learn of the decision too).
                self.changed()
            self._learn(u, now, out)  # remembers the tombstone
            return
        if u.incarnation + SAME_LIFE <= rec.incarnation:
            return  # about an older life: this one is a newer process
        if rec.downed and rec.incarnation >= u.incarnation:
            return
        downed[u.name] = max(u.incarnation, rec.incarnation, downed.get(u.name, 0))
        rec.downed = True
        incarnation = max(u.incarnation, rec.incarnation)
        if rec.status in LIVE:
            self._declare(rec, incarnation, "dead", u.by, now, out, downed=True)
            return
        # Already dead or left by detection: the decision is news all the same.
        previous = rec.member()
        rec.incarnation = incarnation
        self.changed()
        out.append(MemberEvent("updated", rec.member(), previous, u.by, downed=True))
        self.broadcast(rec, by=u.by)

    def _learn(self, u: Update, now: float, out: list[Action]) -> None:
        tomb = self.tombstones.get(u.name)
        if tomb is not None and u.incarnation <= tomb:
            return
        if u.status in ("dead", "left"):
            # Never seen alive: remember only that this incarnation is over.
            self.tombstones[u.name] = u.incarnation
            return
        self.tombstones.pop(u.name, None)
        rec = MemberRecord(u.name, u.address, u.incarnation, "alive", u.role, now)
        self.records[u.name] = rec
        self.live_others += 1
        self._on_live(u.name)
        self.changed()
        out.append(MemberEvent("joined", rec.member(), None))
        if u.status == "suspect":
            self._suspect(rec, u.incarnation, u.by, now, out)
        else:
            self.broadcast(rec)

    def _revive(self, rec: MemberRecord, u: Update, now: float, out: list[Action]) -> None:
        previous = rec.member()
        was = rec.status
        if rec.downed:  # a newer life of a downed member (the old one is refused)
            rec.downed = False
            self.verdicts.downed.pop(rec.name, None)
        rec.incarnation, rec.address, rec.role = u.incarnation, u.address, u.role
        rec.status, rec.since, rec.suspicion = "alive", now, None
        self.suspects.pop(rec.name, None)
        if was not in LIVE:
            self.live_others += 1
            self._on_live(rec.name)
            if was == "dead":
                self.verdicts.came_back(rec.name, now)
        self.changed()
        kind: MemberEventKind = (
            "joined" if was not in LIVE else "alive" if was == "suspect" else "updated"
        )
        out.append(MemberEvent(kind, rec.member(), previous))
        self.broadcast(rec)

    def _suspect(self, rec: MemberRecord, incarnation: int, by: str, now: float,
                 out: list[Action]) -> None:
        previous = rec.member()
        min_s, max_s, k = suspicion_timeouts(self.settings, self.live_count())
        scale = self._health.multiplier  # a sick node accuses later
        rec.status, rec.incarnation, rec.since = "suspect", incarnation, now
        rec.suspicion = Suspicion(now, min_s * scale, max_s * scale, k, by)
        self.suspects[rec.name] = None
        self._n["suspicions"] += 1
        self.changed()
        out.append(MemberEvent("suspected", rec.member(), previous, by))
        self.broadcast(rec, by=by)

    def _declare(self, rec: MemberRecord, incarnation: int, status: UpdateStatus, by: str,
                 now: float, out: list[Action], *, downed: bool = False) -> None:
        previous = rec.member()
        if rec.status in LIVE:
            self.live_others -= 1
        rec.status, rec.incarnation, rec.since, rec.suspicion = status, incarnation, now, None
        self.suspects.pop(rec.name, None)
        self.changed()
        out.append(MemberEvent("left" if status == "left" else "dead", rec.member(), previous,
                              by, downed))
        self.broadcast(rec, by=by)

    # ------------------------------------------------------------------ about this node

    def _about_me(self, u: Update, out: list[Action]) -> None:
        me = self.me
        if self.leaving:
            return
        if u.status == "alive":
            if u.incarnation > me.incarnation:
                self._refute(u.incarnation, out)  # a previous life ran ahead: jump past it
            elif u.incarnation == me.incarnation and u.address != me.address:
                self._n["name_conflicts"] += 1
            return
        if u.status == "dead" and u.incarnation >= self.first_incarnation:
            if u.downed and not self.verdicts.by_downed(u, self.records):
                # A split-brain decision removed this life: no refutation brings it back.
                out.append(MemberEvent("declared_dead", me.member(), None, u.by, True))
                return
            if u.incarnation > self.declared_at:
                # The others' failure detector declared this life dead, even if we
                # refuted a suspicion since: they may have moved our keys. Refute, and
                # let the node drop what went stale (once per declared incarnation: the
                # rumour goes round a few times).
                self.declared_at = u.incarnation
                out.append(MemberEvent("declared_dead", me.member(), None, u.by))
        if u.incarnation < me.incarnation:
            return
        self._health.refuted()
        self._refute(u.incarnation, out)

    def _refute(self, incarnation: int, out: list[Action]) -> None:
        previous = self.me.member()
        self.me.incarnation = incarnation + 1
        self._n["refutations"] += 1
        self.changed()
        out.append(MemberEvent("updated", self.me.member(), previous))
        self.broadcast(self.me)
