"""SWIM with Lifeguard, as a pure state machine.

Owns one node's view of the cluster: who exists, at which incarnation and status, which
member to probe next, which suspicions are running, and what to piggyback. Inputs are
events with the current time (:meth:`SwimProtocol.tick`, :meth:`~SwimProtocol.receive`,
:meth:`~SwimProtocol.join`, :meth:`~SwimProtocol.leave`, push-pull merges); outputs are
lists of :data:`Action`: datagrams to send (:class:`Send`), push-pull exchanges to start
(:class:`StartSync`) and membership changes (:class:`MemberEvent`). The caller asks
:meth:`~SwimProtocol.next_deadline` when to tick next. ``docs/design/membership.md``
explains the protocol; prior art: SWIM (Das et al., 2002), Lifeguard (Dadgar et al.,
2018) and HashiCorp memberlist, whose rules this follows where the papers are silent.

The protocol is built from parts with one job each: :mod:`.table` (the members and the
update rules), :mod:`.verdicts` (downed lives and stale verdicts), :mod:`.probing` (the
failure detector), :mod:`.dissemination` (the piggybacked updates), :mod:`.timing`
(settings and suspicion timeouts) and :mod:`.actions` (what it returns). This module
wires them and keeps the rest of a node's protocol: joining, push-pull, leaving and
forgetting.

Pure: no I/O, no asyncio, no clock and no global randomness (an injected
:class:`random.Random`), so a test can run a hundred of these on one simulated network.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import msgspec

from .actions import Action, MemberEvent, MemberEventKind, Send, StartSync, SwimStatistics
from .dissemination import Piggyback
from .health import LocalHealth
from .messages import (
    Ack,
    Gossip,
    GossipMessage,
    Nack,
    Ping,
    PingReq,
    SyncState,
    Update,
    decode_sync_state,
    encode_sync_state,
    gossip_address,
)
from .probing import Prober
from .snapshot import Member
from .table import LIVE, MemberRecord, MemberTable, Role
from .timing import SwimSettings, suspicion_timeouts

__all__ = [
    "Action",
    "MemberEvent",
    "MemberEventKind",
    "Send",
    "StartSync",
    "SwimProtocol",
    "SwimSettings",
    "SwimStatistics",
    "suspicion_timeouts",
]


class SwimProtocol:
    """One node's SWIM state machine.

    Args:
        name: this node's name, its identity in the cluster.
        address: this node's TCP ``host:port`` (its UDP address is
            :func:`~.messages.gossip_address` of it).
        incarnation: this life's incarnation (the node uses wall-clock milliseconds at
            start, so a restart is always newer).
        random: the node's random source (targets, helpers, sync peers).
        settings: timers and limits.
        role: ``member`` or ``client``.
        now: the current time, in the caller's clock.
    """

    def __init__(self, name: str, address: str, incarnation: int, *, random: random.Random,
                 settings: SwimSettings | None = None, role: Role = "member",
                 now: float = 0.0) -> None:
        self.settings = settings if settings is not None else SwimSettings()
        self._random = random
        self._piggyback = Piggyback(self.settings.retransmit_mult,
                                    self.settings.max_datagram_bytes)
        self.health = LocalHealth(self.settings.health_max_multiplier)
        self._n = dict.fromkeys(
            ("probes_sent", "probes_acked", "probes_failed", "ping_reqs_sent",
             "nacks_received", "relays", "suspicions", "deaths_declared", "refutations",
             "updates_received", "syncs_merged", "misdirected_pings", "name_conflicts",
             "stale_verdicts"), 0)
        self._seq = 0
        self._table = MemberTable(
            MemberRecord(name, address, incarnation, "alive", role, now),
            settings=self.settings, health=self.health, piggyback=self._piggyback,
            counters=self._n, on_live=self._add_to_order)
        self._prober = Prober(self._table, settings=self.settings, health=self.health,
                              random=random, send=self._send, next_seq=self._next_seq,
                              counters=self._n, now=now)
        self._seeds: tuple[str, ...] = ()
        self._next_sync_at = now + self.settings.sync_interval_s
        self._next_reconnect_at = now + self.settings.reconnect_interval_s
        self._next_reap_at = now + self.settings.forget_after_s / 10
        self._leave_pending: dict[int, str] = {}
        self._leave_resend_at = 0.0
        self._table.broadcast(self._table.me)

    # ------------------------------------------------------------------ views

    @property
    def name(self) -> str:
        return self._table.me.name

    @property
    def address(self) -> str:
        return self._table.me.address

    @property
    def incarnation(self) -> int:
        return self._table.me.incarnation

    @property
    def version(self) -> int:
        """Grows by one with every change of any member, this node included."""
        return self._table.version

    @property
    def leaving(self) -> bool:
        return self._table.leaving

    @property
    def leave_acknowledged(self) -> bool:
        """After :meth:`leave`: every member it was sent to has acknowledged it."""
        return self._table.leaving and not self._leave_pending

    def members(self) -> tuple[Member, ...]:
        """Every member known, this node included, sorted by name."""
        return self._table.members()

    def member(self, name: str) -> Member | None:
        return self._table.member(name)

    def downed(self) -> dict[str, int]:
        """Members a split-brain decision removed (decided here or heard from peers, a
        member this node never saw alive included), each with the incarnation of the
        life it removed; a newer life of the member clears it."""
        return dict(self._table.verdicts.downed)

    def live_count(self) -> int:
        """Alive and suspect members, this node included."""
        return self._table.live_count()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work next (``None``: only when something arrives)."""
        deadlines = self._prober.deadlines()
        if self._table.leaving:
            if self._leave_pending:
                deadlines.append(self._leave_resend_at)
        else:
            deadlines.append(self._prober.next_probe_at)
            deadlines.append(self._next_sync_at)
            indirect_at = self._prober.indirect_deadline()
            if indirect_at is not None:
                deadlines.append(indirect_at)
            deadlines.extend(self._table.suspicion_deadlines())
        return min(deadlines) if deadlines else None

    def statistics(self) -> SwimStatistics:
        counts = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for rec in (self._table.me, *self._table.records.values()):
            counts[rec.status] += 1
        return SwimStatistics(
            **counts, incarnation=self._table.me.incarnation, health_score=self.health.score,
            queued_updates=len(self._piggyback), **self._n,
        )

    # ------------------------------------------------------------------ inputs

    def join(self, seeds: Iterable[str], now: float) -> list[Action]:
        """Start joining through ``seeds`` (TCP addresses): a push-pull with each.

        Replaces the seeds given before. Until another member is known, :meth:`tick`
        retries a random seed every ``join_retry_s``.
        """
        self._seeds = tuple(dict.fromkeys(s for s in seeds if s != self._table.me.address))
        self._next_sync_at = min(self._next_sync_at, now + self.settings.join_retry_s)
        return [StartSync(seed) for seed in self._seeds]

    def tick(self, now: float) -> list[Action]:
        """Run the timers that are due at ``now``."""
        out: list[Action] = []
        self._prober.nack_relays(now, out)
        if self._table.leaving:
            if self._leave_pending and now >= self._leave_resend_at:
                self._send_leave(out, now)
            return out
        if self._prober.tick(now, out) and now >= self._next_reconnect_at:
            self._reconnect(now, out)
        self._table.expire_suspicions(now, out)
        if now >= self._next_sync_at:
            self._start_syncs(now, out)
        if now >= self._next_reap_at:
            self._next_reap_at = now + self.settings.forget_after_s / 10
            self._table.reap(now)
        return out

    def receive(self, msg: GossipMessage, from_addr: str, now: float) -> list[Action]:
        """Handle one authenticated datagram from UDP ``from_addr``."""
        out: list[Action] = []
        self._n["updates_received"] += len(msg.updates)
        for update in msg.updates:
            self._table.apply(update, now, out)
        if isinstance(msg, Ping):
            self._prober.on_ping(msg, from_addr, out)
        elif isinstance(msg, Ack):
            if not self._prober.on_ack(msg.seq, out):
                self._leave_pending.pop(msg.seq, None)
        elif isinstance(msg, Nack):
            self._prober.on_nack(msg)
        elif isinstance(msg, PingReq):
            self._prober.on_ping_req(msg, from_addr, now, out)
        elif msg.seq > 0:  # Gossip asking for an ack
            self._send(out, from_addr, Ack(msg.seq))
        return out

    def down(self, names: Iterable[str], now: float) -> list[Action]:
        """A split-brain decision removed ``names`` (their current lives): declare them
        dead for good. Their refutations are refused from now on, and they learn it from
        the next exchange with this node (the ``downed`` flag); a restarted process, a
        newer life, is a member again."""
        return self._table.down(names, now)

    def leave(self, now: float) -> list[Action]:
        """Leave gracefully: tell every live member, and stop probing.

        Resends to members that did not ack every ``probe_timeout_s``; see
        :attr:`leave_acknowledged`.
        """
        table = self._table
        if table.leaving:
            return []
        out: list[Action] = []
        table.leaving = True
        table.me.status = "left"
        table.me.since = now
        table.changed()
        table.broadcast(table.me)
        self._prober.probe = None
        for rec in table.records.values():
            if rec.status in LIVE:
                self._leave_pending[self._next_seq()] = rec.name
        self._send_leave(out, now)
        return out

    def local_state(self) -> bytes:
        """This node's full member table, encoded for a push-pull exchange."""
        table = self._table
        updates = tuple(r.update() for r in (table.me, *table.records.values()))
        return encode_sync_state(SyncState(table.me.name, updates))

    def merge_state(self, payload: bytes, now: float) -> list[Action]:
        """Merge a peer's full table (its push-pull answer or request).

        A remote ``dead`` about a member we know only makes us suspect it: we check for
        ourselves (memberlist does the same). A ``downed`` one is a split-brain decision,
        not an observation: it is applied as it is.

        Raises:
            ProtocolError: ``payload`` is not a valid sync state; nothing was merged.
        """
        state = decode_sync_state(payload)
        out: list[Action] = []
        for u in state.members:
            if u.status == "dead" and u.name in self._table.records and not u.downed:
                u = msgspec.structs.replace(u, status="suspect", by=u.by or state.source)
            self._table.apply(u, now, out)
        self._n["syncs_merged"] += 1
        return out

    def handle_sync(self, payload: bytes, now: float) -> tuple[bytes, list[Action]]:
        """Answer a push-pull request: merge ``payload``, return our state after it.

        Answering *after* merging lets a member that finds itself declared dead in
        ``payload`` answer with its refutation at once (how partitions heal).

        Raises:
            ProtocolError: ``payload`` is not a valid sync state.
        """
        out = self.merge_state(payload, now)
        return self.local_state(), out

    # ------------------------------------------------------------------ sync and leave

    def _start_syncs(self, now: float, out: list[Action]) -> None:
        s = self.settings
        alive = self._table.with_status("alive")
        if alive:
            out.append(StartSync(self._random.choice(alive).address))
            self._next_sync_at = now + s.sync_interval_s
        elif self._seeds:
            out.append(StartSync(self._random.choice(self._seeds)))
            self._next_sync_at = now + s.join_retry_s
        else:
            self._next_sync_at = now + s.sync_interval_s
        dead = self._table.with_status("dead")
        if dead:  # reconnect: heals the views after a partition
            out.append(StartSync(self._random.choice(dead).address))

    def _reconnect(self, now: float, out: list[Action]) -> None:
        """A push-pull with one member declared dead by failure detection only: if the
        cut or pause has ended, it hears of its death at once and refutes it (a member
        that is not probed would otherwise wait for its own next sync, up to
        ``sync_interval_s``, while the split-brain timer runs)."""
        self._next_reconnect_at = now + self.settings.reconnect_interval_s
        unreachable = [r for r in self._table.with_status("dead") if not r.downed]
        if unreachable:
            out.append(StartSync(self._random.choice(unreachable).address))

    def _send_leave(self, out: list[Action], now: float) -> None:
        me = self._table.me
        update = me.update()
        for seq, name in self._leave_pending.items():
            rec = self._table.records.get(name)
            if rec is not None:
                self._send(out, gossip_address(rec.address), Gossip(seq, me.name),
                           first=update)
        self._leave_resend_at = now + self.settings.probe_timeout_s

    # ------------------------------------------------------------------ plumbing

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _add_to_order(self, name: str) -> None:
        self._prober.add_to_order(name)

    def _send(self, out: list[Action], address: str, msg: GossipMessage, *,
              first: Update | None = None) -> None:
        """Queue ``msg`` for ``address`` with as many piggybacked updates as fit."""
        self._piggyback.send(out, address, msg, self._table.live_count(), first=first)

    def __repr__(self) -> str:
        me = self._table.me
        return (f"<SwimProtocol {me.name}@{me.incarnation}"
                f" [{self.live_count()} live of {len(self._table.records) + 1},"
                f" health x{self.health.multiplier}, {len(self._piggyback)} queued]>")
