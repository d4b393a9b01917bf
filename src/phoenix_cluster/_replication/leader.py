"""The leader side: elections and quorums, as decisions over replies.

:class:`Election` collects the promises of one prepare round, discovers the configs the
replicas report, decides whether the round has its quorum, and plans the catch-up: the
newest entry per key, the entries to restamp, what each new replica lacks.
:class:`Quorum` decides whether a write (or a catch-up, or a mark) reached a majority
of every set of a config. Both follow docs/design/replication.md ("Electing a leader",
"Writing"); the service (``campaign.py``, ``commits.py``) feeds them replies and acts on
their verdicts.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .messages import Promise, WireEntry
from .types import Config, Entry, Epoch, RecordKey, Version, config_union, majority

__all__ = ["Election", "ElectionStatus", "Plan", "Quorum", "QuorumStatus"]

QuorumStatus = Literal["pending", "done", "fenced", "impossible"]
ElectionStatus = Literal["pending", "quorum", "refused", "discover", "impossible"]


class Quorum:
    """Has every set of ``config`` a majority of acknowledgements?

    A node may sit in several sets; its answer counts in each. ``fenced`` wins over
    everything: one replica that promised a newer epoch means the sender is deposed.
    """

    __slots__ = ("acked", "config", "failed", "fenced_by")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.acked: set[str] = set()
        self.failed: set[str] = set()
        self.fenced_by: Epoch | None = None

    def ack(self, node: str) -> None:
        self.acked.add(node)

    def fail(self, node: str) -> None:
        self.failed.add(node)

    def fence(self, node: str, promised: Epoch) -> None:
        self.failed.add(node)
        if self.fenced_by is None or promised > self.fenced_by:
            self.fenced_by = promised

    @property
    def status(self) -> QuorumStatus:
        if self.fenced_by is not None:
            return "fenced"
        done = True
        acked, failed = self.acked, self.failed
        for members in self.config:  # (counted in loops: this runs per reply of a write)
            need = len(members) // 2 + 1  # majority(members)
            count = 0
            for m in members:
                if m in acked:
                    count += 1
            if count >= need:
                continue
            done = False
            left = len(members)
            for m in members:
                if m in failed:
                    left -= 1
            if left < need:
                return "impossible"
        return "done" if done else "pending"

    def __repr__(self) -> str:
        return (f"<Quorum {self.status} acked={sorted(self.acked)} "
                f"failed={sorted(self.failed)}>")


@dataclass(slots=True)
class Plan:
    """What a won election does before its leader serves.

    Attributes:
        final: the entry every key will hold (adopted, restamped where needed).
        restamped: how many entries got a version of the new epoch.
        next_seq: the first sequence number the leader's writes use.
        sends: per member of the new set, the entries it lacks (``None``: all of them).
        holding: members of the new set that already hold every final entry.
        stale: the candidate's own store lacked a newer version of some key: agents it
            hosted on those keys are stale (matters only for a re-election).
    """

    final: dict[RecordKey, Entry]
    restamped: int
    next_seq: int
    sends: dict[str, list[WireEntry] | None] = field(default_factory=dict)
    holding: frozenset[str] = frozenset()
    stale: bool = False

    def entries_for(self, node: str) -> list[WireEntry]:
        sends = self.sends.get(node)
        if sends is None:
            return [(kind, key, entry) for (kind, key), entry in self.final.items()]
        return sends


class Election:
    """One prepare round of a candidate for ``partition`` at ``epoch``.

    Args:
        partition: the partition.
        epoch: the epoch this round asks for.
        target: the new replica set (the candidate's table), which must hold every
            entry before the candidate serves.
        config: every set this round asks (``target``, the old sets the candidate
            remembers as hints, and ``family``); canonical.
        family: sets known to hold data (from earlier rounds or probes); canonical.
    """

    def __init__(self, partition: int, epoch: Epoch, target: tuple[str, ...], config: Config,
                 family: Config = ()) -> None:
        self.partition = partition
        self.epoch = epoch
        self.target = target
        self.config = config
        self.family = family
        self.promises: dict[str, Promise] = {}
        self.failed: set[str] = set()
        self.lost: set[str] = set()
        self.refused_by: Epoch | None = None

    def members(self) -> frozenset[str]:
        """Whom to send the prepare to: every member of every required set."""
        return frozenset(m for members in self.config for m in members)

    # ----------------------------------------------------------------- replies

    def reply(self, node: str, promise: Promise) -> None:
        if promise.ok:
            self.promises[node] = promise
        else:
            self.failed.add(node)
            if self.refused_by is None or promise.promised > self.refused_by:
                self.refused_by = promise.promised

    def fail(self, node: str) -> None:
        self.failed.add(node)

    def lose(self, node: str) -> None:
        """``node`` is gone with its memory for good (downed, and it kept no data on
        disk): it counts as a member that answered and forgot everything."""
        self.lost.add(node)

    # ----------------------------------------------------------------- verdicts

    def _families(self) -> tuple[Config, Config]:
        """``(data, maybe)``: the config of the newest mark any promiser took (where
        committed data is), and the configs of candidates promised after that mark
        (where it may have moved) plus the given family."""
        data: Config = ()
        maybe = self.family
        if self.promises:
            top = max(p.marked for p in self.promises.values())
            for promise in self.promises.values():
                if promise.marked == top:
                    data = config_union(data, promise.config)
                if promise.promised > top:
                    maybe = config_union(maybe, promise.pending)
        return data, maybe

    def discovered(self) -> Config:
        """Every set the promises say data is or may be in (step 3)."""
        data, maybe = self._families()
        return config_union(data, maybe)

    def status(self) -> ElectionStatus:
        """Where the round stands (docs/design/replication.md, step 4)."""
        if self.refused_by is not None:
            return "refused"
        data, maybe = self._families()
        if any(s not in self.config for s in data) or any(s not in self.config for s in maybe):
            return "discover"
        done = True
        for members in self.config:
            need = majority(members)
            lost = sum(1 for m in members if m in self.lost)
            failed = sum(1 for m in members if m in self.failed and m not in self.lost)
            promisers = [self.promises[m] for m in members if m in self.promises]
            # Every member answered, or is known to have lost its memory for good: what
            # the synced ones hold is all that is left anywhere.
            everyone = len(promisers) + lost >= len(members)
            synced = sum(1 for p in promisers if p.synced)
            # Synced promisers remember everything they took (amnesiacs do not).
            could_sync = len(members) - failed - lost - (len(promisers) - synced)
            if members in data:
                # Holds the committed data: a majority that remembers, or every member
                # answered and the others forgot (what only they held is gone with their
                # memory: waiting would never bring it back).
                if synced >= need or everyone:
                    continue
                done = False
                if could_sync < need and failed:
                    return "impossible"
            elif members in maybe:
                # A candidate may have moved the data here after the newest mark seen:
                # its mark would show on any majority that cannot have forgotten, or on
                # someone when every member answers.
                trusted = sum(1 for p in promisers if not p.amnesiac)
                if trusted >= need or everyone:
                    continue
                done = False
                could_trust = len(members) - failed - lost - (len(promisers) - trusted)
                if could_trust < need and failed:
                    return "impossible"
            elif members == self.target:
                # The new set: its members must promise before they take the catch-up.
                if len(promisers) >= need:
                    continue
                done = False
                if len(members) - failed - lost < need:
                    return "impossible"
            # Any other set (an old set the candidate remembers) was asked as a hint for
            # discovery only: what it reports joins the families above.
        return "quorum" if done else "pending"

    def degraded(self) -> Config:
        """Sets holding the committed data whose remembering members are no majority:
        the round adopts what those hold; writes only the forgetful held are lost."""
        data, _ = self._families()
        return tuple(members for members in data
                     if sum(1 for m in members if m in self.promises
                            and self.promises[m].synced) < majority(members))

    def blank(self) -> bool:
        """Nobody who answered knows anything of the partition (step 5: probe)."""
        return not self.family and not any(p.knows() for p in self.promises.values())

    def plan(self, self_node: str) -> Plan:
        """Adopt the newest entry per key, restamp what is not safely on majorities, and
        list what each member of the target set lacks (steps 6 and 7)."""
        family = self.discovered()
        synced = {node: p for node, p in self.promises.items() if p.synced}
        held: dict[str, dict[RecordKey, Version]] = {}
        chosen: dict[RecordKey, Entry] = {}
        for node, promise in synced.items():
            versions = held[node] = {}
            for kind, key, entry in promise.entries:
                rk = (kind, key)
                version = entry.version
                versions[rk] = version
                best = chosen.get(rk)
                if best is None or version > best.version:
                    chosen[rk] = entry
        check_sets = config_union(family, (tuple(sorted(self.target)),))
        final: dict[RecordKey, Entry] = {}
        seq = 0
        for rk in sorted(chosen):
            entry = chosen[rk]
            version = entry.version
            holders = {node for node, versions in held.items() if versions.get(rk) == version}
            if all(sum(1 for m in members if m in holders) >= majority(members)
                   for members in check_sets):
                final[rk] = entry
            else:
                seq += 1
                final[rk] = entry.restamped(self.epoch, seq)
        sends: dict[str, list[WireEntry] | None] = {}
        holding: set[str] = set()
        for member in self.target:
            has = held.get(member)
            if has is None:
                # Unsynced or silent: it gets everything. With nothing to send, a member
                # that promised this epoch holds everything already (a mark will do).
                sends[member] = None if final else []
                if not final and member in self.promises:
                    holding.add(member)
                continue
            lacks = [(kind, key, entry) for (kind, key), entry in final.items()
                     if has.get((kind, key)) != entry.version]
            sends[member] = lacks
            if not lacks:
                holding.add(member)
        own = held.get(self_node, {})
        stale = any(own.get(rk, _NO_VERSION) < entry.version for rk, entry in chosen.items())
        return Plan(final=final, restamped=seq, next_seq=seq + 1, sends=sends,
                    holding=frozenset(holding), stale=stale)

    def __repr__(self) -> str:
        return (f"<Election p={self.partition} epoch={self.epoch} {self.status()} "
                f"promised={sorted(self.promises)} failed={sorted(self.failed)}>")


_NO_VERSION = Version(-1, "", -1)
