"""SWIM's failure detector: whom to probe next, the probe in flight, and probes relayed.

Each protocol period :class:`Prober` pings one member, walking a shuffled list round
robin (a newcomer is inserted at a random position, so it is probed within a round).
Without an ack within the probe timeout it asks ``indirect_probes`` helpers to ping the
target (:class:`~.messages.PingReq`); without any ack by the end of the period the
target is suspected through the member table. It also helps others: a ping-req it
receives becomes a ping of its own, whose ack it relays, or a nack when none came.
Lifeguard's local health scales the period and timeout, and learns from each outcome.

Pure: no I/O, no asyncio, no clock and no global randomness.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .actions import Action
from .health import LocalHealth
from .messages import Ack, GossipMessage, Nack, Ping, PingReq, Update, gossip_address
from .table import LIVE, MemberRecord, MemberTable
from .timing import SwimSettings

__all__ = ["Prober", "SendDatagram"]

_MAX_RELAYS = 1024  # ping-reqs helped at once; beyond this a (buggy) peer is ignored
_MAX_RELAY_WAIT_S = 10.0


class SendDatagram(Protocol):
    """Append ``msg`` for ``address`` to ``out`` with piggybacked updates, ``first`` first."""

    def __call__(self, out: list[Action], address: str, msg: GossipMessage, *,
                 first: Update | None = None) -> None: ...


class _Probe:
    __slots__ = ("acked", "end_at", "expected_nacks", "indirect_at", "indirect_sent", "nacks",
                 "seq", "target")

    def __init__(self, target: str, seq: int, indirect_at: float, end_at: float) -> None:
        self.target = target
        self.seq = seq
        self.indirect_at = indirect_at
        self.end_at = end_at
        self.acked = False
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


@dataclass(slots=True)
class _Relay:
    reply_to: str
    seq: int
    nack_at: float


class Prober:
    """One node's probes, and the probes it runs for others.

    Args:
        table: the members (targets, helpers) and the rules a failed probe goes through.
        settings: the period, the timeout and the number of helpers.
        health: Lifeguard's local health, which scales the timers and learns from probes.
        random: the node's random source (the probing order, helpers).
        send: appends a datagram to the actions.
        next_seq: the node's sequence numbers (probes, relays, leave requests).
        counters: the protocol's counters.
        now: the current time.
    """

    def __init__(self, table: MemberTable, *, settings: SwimSettings, health: LocalHealth,
                 random: random.Random, send: SendDatagram, next_seq: Callable[[], int],
                 counters: dict[str, int], now: float) -> None:
        self._table = table
        self._settings = settings
        self._health = health
        self._random = random
        self._send = send
        self._next_seq = next_seq
        self._n = counters
        self.probe: _Probe | None = None
        # Start at a random point of the first period so nodes started together spread out.
        self.next_probe_at = now + random.random() * settings.probe_interval_s
        self._order: list[str] = []
        self._order_index = 0
        self._relays: dict[int, _Relay] = {}

    def deadlines(self) -> list[float]:
        """When the relayed probes need their nack."""
        return [relay.nack_at for relay in self._relays.values()]

    def indirect_deadline(self) -> float | None:
        probe = self.probe
        if probe is not None and not probe.acked and not probe.indirect_sent:
            return probe.indirect_at
        return None

    def add_to_order(self, name: str) -> None:
        # A random position, like memberlist, so a newcomer is probed within a round.
        pos = self._random.randint(0, len(self._order))
        self._order.insert(pos, name)
        if pos < self._order_index:
            self._order_index += 1

    # ------------------------------------------------------------------ timers

    def nack_relays(self, now: float, out: list[Action]) -> None:
        """Answer with a nack the ping-reqs whose target did not ack in time."""
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                self._send(out, relay.reply_to, Nack(relay.seq))

    def tick(self, now: float, out: list[Action]) -> bool:
        """Run the probe's timers; ``True`` when a new protocol period began."""
        probe = self.probe
        if (probe is not None and not probe.acked and not probe.indirect_sent
                and now >= probe.indirect_at):
            self._probe_indirectly(probe, now, out)
        if now < self.next_probe_at:
            return False
        if probe is not None:
            self._finish_probe(probe, now, out)
        self._start_probe(now, out)
        return True

    def _start_probe(self, now: float, out: list[Action]) -> None:
        s = self._settings
        self.next_probe_at = now + self._health.scale(s.probe_interval_s)
        self.probe = None
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self.probe = _Probe(target.name, seq, now + self._health.scale(s.probe_timeout_s),
                            self.next_probe_at)
        self._n["probes_sent"] += 1
        me = self._table.me.name
        # Lifeguard's buddy system: tell a suspect first, so it can refute at once.
        first = target.update(me) if target.status == "suspect" else None
        self._send(out, gossip_address(target.address), Ping(seq, target.name, me),
                   first=first)

    def _next_target(self) -> MemberRecord | None:
        records = self._table.records
        for _ in range(len(self._order) + 1):
            if self._order_index >= len(self._order):
                self._order = [n for n, r in records.items() if r.status in LIVE]
                self._random.shuffle(self._order)
                self._order_index = 0
                if not self._order:
                    return None
            name = self._order[self._order_index]
            self._order_index += 1
            rec = records.get(name)
            if rec is not None and rec.status in LIVE:
                return rec
        return None

    def _probe_indirectly(self, probe: _Probe, now: float, out: list[Action]) -> None:
        probe.indirect_sent = True
        records = self._table.records
        target = records.get(probe.target)
        if target is None or target.status not in LIVE:
            return
        helpers = [r for r in records.values()
                   if r.status == "alive" and r.name != probe.target]
        chosen = self._random.sample(helpers, min(self._settings.indirect_probes, len(helpers)))
        # Helpers nack at 80% of our remaining window, so the nack is back before we judge.
        timeout_ms = max(1, int((probe.end_at - now) * 800))
        for helper in chosen:
            self._send(out, gossip_address(helper.address),
                       PingReq(probe.seq, target.name, target.address, timeout_ms,
                               self._table.me.name))
        probe.expected_nacks = len(chosen)
        self._n["ping_reqs_sent"] += len(chosen)

    def _finish_probe(self, probe: _Probe, now: float, out: list[Action]) -> None:
        self.probe = None
        if probe.acked:
            return
        rec = self._table.records.get(probe.target)
        if rec is None or rec.status not in LIVE:
            return  # it left or was declared dead meanwhile: nobody's fault
        self._n["probes_failed"] += 1
        self._health.probe_failed(probe.expected_nacks, probe.nacks)
        self._table.apply(rec.update(), now, out, suspect_by=self._table.me.name)

    # ------------------------------------------------------------------ datagrams

    def on_ping(self, msg: Ping, from_addr: str, out: list[Action]) -> None:
        table = self._table
        if msg.target == table.me.name:
            # A member we declared dead is probing us (it was paused or cut off): tell
            # it first thing, so it learns it was removed instead of carrying on.
            sender = table.records.get(msg.source)
            first: Update | None = (sender.update(table.me.name)
                                    if sender is not None and sender.status == "dead"
                                    else None)
            self._send(out, from_addr, Ack(msg.seq), first=first)
        else:  # a new process at an old address must not answer for its predecessor
            self._n["misdirected_pings"] += 1

    def on_ack(self, seq: int, out: list[Action]) -> bool:
        """Take an ack for the probe or a relay; ``False`` if it answers neither."""
        probe = self.probe
        if probe is not None and probe.seq == seq:
            if not probe.acked:
                probe.acked = True
                self._n["probes_acked"] += 1
                self._health.probe_succeeded()
            return True
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(out, relay.reply_to, Ack(relay.seq))
            return True
        return False

    def on_nack(self, msg: Nack) -> None:
        probe = self.probe
        if probe is not None and probe.seq == msg.seq:
            probe.nacks += 1
            self._n["nacks_received"] += 1

    def on_ping_req(self, msg: PingReq, from_addr: str, now: float,
                    out: list[Action]) -> None:
        if len(self._relays) < _MAX_RELAYS:
            self._n["relays"] += 1
            seq = self._next_seq()
            wait = min(msg.timeout_ms / 1000, _MAX_RELAY_WAIT_S)
            self._relays[seq] = _Relay(from_addr, msg.seq, now + wait)
            self._send(out, gossip_address(msg.target_address),
                       Ping(seq, msg.target, self._table.me.name))
