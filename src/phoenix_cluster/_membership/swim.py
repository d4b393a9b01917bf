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

Pure: no I/O, no asyncio, no clock and no global randomness (an injected
:class:`random.Random`), so a test can run a hundred of these on one simulated network.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import msgspec

from phoenix_cluster.errors import ConfigError

from .dissemination import DisseminationBuffer
from .health import LocalHealth
from .messages import (
    SEAL_OVERHEAD,
    Ack,
    Gossip,
    GossipCodec,
    GossipMessage,
    Nack,
    Ping,
    PingReq,
    SyncState,
    Update,
    UpdateStatus,
    decode_sync_state,
    encode_sync_state,
    gossip_address,
)
from .snapshot import Member

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

Role = Literal["member", "client"]
_LIVE = ("alive", "suspect")
_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}
_MAX_RELAYS = 1024  # ping-reqs helped at once; beyond this a (buggy) peer is ignored
SAME_LIFE = 1_000
"""Incarnations within this distance above a downed one are the same process's life (its
refutations, +1 each); a restarted process starts at its start time in milliseconds,
seconds past any incarnation of a life that lived long enough to be downed."""
_MAX_RELAY_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class SwimSettings:
    """Every membership timer and limit, each default explained once.

    Attributes:
        probe_interval_s: the protocol period: one member probed per period. Detection
            time and probe traffic (one ping and ack per node per period) scale with it.
        probe_timeout_s: how long to wait for a direct ack before asking helpers. Far above
            a LAN round trip (< 1 ms) and below half the period, so the indirect probes
            still have time.
        indirect_probes: k, helpers asked to probe a target that missed its direct ack.
            Three makes a false failure through independent lossy paths very unlikely.
        suspicion_mult: scales the suspicion timeout
            (``mult * max(1, log10 n) * probe_interval``: 4 s below 10 members) and sets
            the confirmations that shrink it to the minimum (``mult - 2``).
        suspicion_max_timeout_mult: a suspicion nobody else confirms lasts this many
            times the minimum (Lifeguard): a lone node with a bad link accuses slowly.
        retransmit_mult: λ: each update is piggybacked λ·⌈log₂(n+1)⌉ times by each node
            that learns it, enough for an epidemic to reach everybody with high
            probability.
        sync_interval_s: push-pull full-state exchange period with one random member;
            repairs whatever gossip lost. Each round also tries one dead member, to merge
            the views again after a partition heals.
        sync_timeout_s: how long one push-pull exchange may take.
        reconnect_interval_s: how often (at most once per probe round) a push-pull goes
            to one member declared dead by failure detection alone (not downed): a cut
            or pause that ends is noticed within about this long, and the member
            refutes, well before a split-brain decision (``stable_after_s``) could down
            it. Every ``sync_interval_s`` one dead member of any kind is tried as well.
        join_retry_s: while no other member is known, push-pull to a random seed this
            often, so nodes may start in any order.
        max_datagram_bytes: the largest datagram sent, seal included: below a 1,500-byte
            Ethernet MTU minus IP and UDP headers, so datagrams never fragment.
        health_max_multiplier: the most Lifeguard may stretch our own timers (8 times).
        lag_check_interval_s: how often the service measures its event-loop lag.
        lag_threshold_s: lag that counts against our own health: a fifth of the probe
            timeout, well above a healthy loop's hiccups.
        leave_timeout_s: how long a graceful leave waits for acks of its ``left``.
        forget_after_s: dead and left members stay listed this long, then shrink to a
            tombstone (name and incarnation) that keeps them from resurrecting.
    """

    probe_interval_s: float = 1.0
    probe_timeout_s: float = 0.5
    indirect_probes: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    sync_interval_s: float = 10.0
    sync_timeout_s: float = 5.0
    reconnect_interval_s: float = 1.0
    join_retry_s: float = 1.0
    max_datagram_bytes: int = 1400
    health_max_multiplier: int = 8
    lag_check_interval_s: float = 0.5
    lag_threshold_s: float = 0.1
    leave_timeout_s: float = 1.0
    forget_after_s: float = 3600.0

    def __post_init__(self) -> None:
        for key in ("probe_interval_s", "probe_timeout_s", "sync_interval_s",
                    "sync_timeout_s", "reconnect_interval_s", "join_retry_s",
                    "lag_check_interval_s",
                    "leave_timeout_s", "forget_after_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}", key=key)
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError(
                f"probe_timeout_s ({self.probe_timeout_s}) must be shorter than"
                f" probe_interval_s ({self.probe_interval_s})",
                key="probe_timeout_s",
            )
        for key in ("suspicion_mult", "suspicion_max_timeout_mult", "retransmit_mult",
                    "health_max_multiplier"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)!r}", key=key)
        if self.indirect_probes < 0:
            raise ConfigError(f"indirect_probes must be >= 0, got {self.indirect_probes}",
                              key="indirect_probes")
        if not 512 <= self.max_datagram_bytes <= 65_507:
            raise ConfigError(
                f"max_datagram_bytes must be in 512..65507, got {self.max_datagram_bytes}",
                key="max_datagram_bytes",
            )


def suspicion_timeouts(settings: SwimSettings, n: int) -> tuple[float, float, int]:
    """``(min_s, max_s, k)`` for a suspicion in a cluster of ``n`` live members.

    ``k`` is how many independent confirmations bring the timeout down to ``min_s``
    (memberlist: ``suspicion_mult - 2``, or 0 when there are too few members to give them).
    """
    min_s = settings.suspicion_mult * max(1.0, math.log10(max(1, n))) * settings.probe_interval_s
    k = settings.suspicion_mult - 2
    if n - 2 < k:
        k = 0
    return min_s, settings.suspicion_max_timeout_mult * min_s, max(0, k)


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``body`` (the encoded ``message``, to be sealed) to UDP ``address``."""

    address: str
    message: GossipMessage
    body: bytes


@dataclass(frozen=True, slots=True)
class StartSync:
    """Run a push-pull exchange with the member at TCP ``address``.

    Send :meth:`SwimProtocol.local_state` and feed the answer to
    :meth:`SwimProtocol.merge_state`; a failed exchange needs no report.
    """

    address: str


MemberEventKind = Literal[
    "joined", "suspected", "alive", "updated", "dead", "left", "declared_dead"
]


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member changed.

    ``kind`` is ``joined`` (new, or back after dead/left as a newer incarnation),
    ``suspected``, ``alive`` (a suspicion was refuted), ``updated`` (a newer incarnation
    or a detail changed, status unchanged), ``dead`` or ``left``; ``declared_dead`` is
    about this node itself: the others declared its current life dead. Without
    ``downed`` only their failure detector did (it refutes; its keys may have moved
    meanwhile, so the node drops its stale agents); with ``downed`` a split-brain decision
    removed it, which no refutation undoes (the node must go, or rejoin as a new life).
    """

    kind: MemberEventKind
    member: Member
    previous: Member | None
    by: str = ""
    """Who suspected it or declared it dead (empty for other kinds)."""
    downed: bool = False
    """``declared_dead`` or ``dead`` by a split-brain decision, not only by detection."""


Action: TypeAlias = Send | StartSync | MemberEvent


@dataclass(frozen=True, slots=True)
class SwimStatistics:
    """Counters of a :class:`SwimProtocol` over its whole life, and its current view."""

    alive: int
    suspect: int
    dead: int
    left: int
    incarnation: int
    health_score: int
    probes_sent: int
    probes_acked: int
    probes_failed: int
    ping_reqs_sent: int
    nacks_received: int
    relays: int
    suspicions: int
    deaths_declared: int
    refutations: int
    updates_received: int
    syncs_merged: int
    misdirected_pings: int
    name_conflicts: int
    stale_verdicts: int
    """Deaths declared by a member held dead (or back from dead only lately), taken as
    suspicions: the verdicts of a node that was cut off."""
    queued_updates: int


class _Suspicion:
    """A running suspicion with Lifeguard's shrinking timeout."""

    __slots__ = ("accusers", "k", "max_s", "min_s", "start")

    def __init__(self, start: float, min_s: float, max_s: float, k: int, by: str) -> None:
        self.start = start
        self.min_s = min_s
        self.max_s = max_s
        self.k = k
        self.accusers = {by}

    def confirm(self, by: str) -> bool:
        """Count an independent accuser; ``False`` if it was counted already."""
        if by in self.accusers:
            return False
        self.accusers.add(by)
        return True

    def deadline(self) -> float:
        confirmations = len(self.accusers) - 1
        if self.k < 1 or confirmations >= self.k:
            return self.start + self.min_s
        frac = math.log(confirmations + 1) / math.log(self.k + 1)
        return self.start + max(self.min_s, self.max_s - frac * (self.max_s - self.min_s))


class _Record:
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
        self.suspicion: _Suspicion | None = None
        self.downed = False  # dead by a split-brain decision: this life cannot come back

    def member(self) -> Member:
        return Member(self.name, self.address, self.status, self.incarnation, self.role)

    def update(self, by: str = "") -> Update:
        return Update(self.name, self.address, self.incarnation, self.status, self.role, by,
                      self.downed)


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
        self._me = _Record(name, address, incarnation, "alive", role, now)
        self._first_incarnation = incarnation  # this process's life starts here
        self._declared_at = -1  # the newest incarnation of ours reported declared dead
        self._members: dict[str, _Record] = {}
        self._tombstones: dict[str, int] = {}
        # name -> the incarnation at which a split-brain decision downed that life: its
        # refutations (same life) are refused; a new process (a newer life) is welcome.
        self._downed: dict[str, int] = {}
        self._live_others = 0
        # A dict as an ordered set: deaths are declared in suspicion order, the same on
        # every run (a set's order follows the process's string hash seed).
        self._suspects: dict[str, None] = {}
        self._back: dict[str, float] = {}
        """Members that came back from dead (a refutation after a cut or a pause), and
        when: their own death verdicts about others are stale for a while (``_apply``)."""
        self._queue: DisseminationBuffer[Update] = DisseminationBuffer(
            self.settings.retransmit_mult)
        self._codec = GossipCodec()
        self.health = LocalHealth(self.settings.health_max_multiplier)
        self._seq = 0
        self._probe: _Probe | None = None
        # Start at a random point of the first period so nodes started together spread out.
        self._next_probe_at = now + self._random.random() * self.settings.probe_interval_s
        self._order: list[str] = []
        self._order_index = 0
        self._relays: dict[int, _Relay] = {}
        self._seeds: tuple[str, ...] = ()
        self._next_sync_at = now + self.settings.sync_interval_s
        self._next_reconnect_at = now + self.settings.reconnect_interval_s
        self._next_reap_at = now + self.settings.forget_after_s / 10
        self._leaving = False
        self._leave_pending: dict[int, str] = {}
        self._leave_resend_at = 0.0
        self._version = 1
        self._members_cache: tuple[int, tuple[Member, ...]] | None = None
        self._n = dict.fromkeys(
            ("probes_sent", "probes_acked", "probes_failed", "ping_reqs_sent",
             "nacks_received", "relays", "suspicions", "deaths_declared", "refutations",
             "updates_received", "syncs_merged", "misdirected_pings", "name_conflicts",
             "stale_verdicts"), 0)
        self._broadcast(self._me)

    # ------------------------------------------------------------------ views

    @property
    def name(self) -> str:
        return self._me.name

    @property
    def address(self) -> str:
        return self._me.address

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def version(self) -> int:
        """Grows by one with every change of any member, this node included."""
        return self._version

    @property
    def leaving(self) -> bool:
        return self._leaving

    @property
    def leave_acknowledged(self) -> bool:
        """After :meth:`leave`: every member it was sent to has acknowledged it."""
        return self._leaving and not self._leave_pending

    def members(self) -> tuple[Member, ...]:
        """Every member known, this node included, sorted by name."""
        cache = self._members_cache
        if cache is not None and cache[0] == self._version:
            return cache[1]
        members = tuple(sorted((r.member() for r in (self._me, *self._members.values())),
                               key=lambda m: m.name))
        self._members_cache = (self._version, members)
        return members

    def member(self, name: str) -> Member | None:
        rec = self._me if name == self._me.name else self._members.get(name)
        return None if rec is None else rec.member()

    def downed(self) -> dict[str, int]:
        """Members a split-brain decision removed (decided here or heard from peers, a
        member this node never saw alive included), each with the incarnation of the
        life it removed; a newer life of the member clears it."""
        return dict(self._downed)

    def live_count(self) -> int:
        """Alive and suspect members, this node included."""
        return self._live_others + (0 if self._leaving else 1)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work next (``None``: only when something arrives)."""
        deadlines = [relay.nack_at for relay in self._relays.values()]
        if self._leaving:
            if self._leave_pending:
                deadlines.append(self._leave_resend_at)
        else:
            deadlines.append(self._next_probe_at)
            deadlines.append(self._next_sync_at)
            probe = self._probe
            if probe is not None and not probe.acked and not probe.indirect_sent:
                deadlines.append(probe.indirect_at)
            for name in self._suspects:
                suspicion = self._members[name].suspicion
                if suspicion is not None:
                    deadlines.append(suspicion.deadline())
        return min(deadlines) if deadlines else None

    def statistics(self) -> SwimStatistics:
        counts = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for rec in (self._me, *self._members.values()):
            counts[rec.status] += 1
        return SwimStatistics(
            **counts, incarnation=self._me.incarnation, health_score=self.health.score,
            queued_updates=len(self._queue), **self._n,
        )

    # ------------------------------------------------------------------ inputs

    def join(self, seeds: Iterable[str], now: float) -> list[Action]:
        """Start joining through ``seeds`` (TCP addresses): a push-pull with each.

        Replaces the seeds given before. Until another member is known, :meth:`tick`
        retries a random seed every ``join_retry_s``.
        """
        self._seeds = tuple(dict.fromkeys(s for s in seeds if s != self._me.address))
        self._next_sync_at = min(self._next_sync_at, now + self.settings.join_retry_s)
        return [StartSync(seed) for seed in self._seeds]

    def tick(self, now: float) -> list[Action]:
        """Run the timers that are due at ``now``."""
        out: list[Action] = []
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                self._send(out, relay.reply_to, Nack(relay.seq))
        if self._leaving:
            if self._leave_pending and now >= self._leave_resend_at:
                self._send_leave(out, now)
            return out
        probe = self._probe
        if (probe is not None and not probe.acked and not probe.indirect_sent
                and now >= probe.indirect_at):
            self._probe_indirectly(probe, now, out)
        if now >= self._next_probe_at:
            if probe is not None:
                self._finish_probe(probe, now, out)
            self._start_probe(now, out)
            if now >= self._next_reconnect_at:
                self._reconnect(now, out)
        for name in list(self._suspects):
            rec = self._members[name]
            if rec.suspicion is not None and now >= rec.suspicion.deadline():
                self._n["deaths_declared"] += 1
                self._declare(rec, rec.incarnation, "dead", self._me.name, now, out)
        if now >= self._next_sync_at:
            self._start_syncs(now, out)
        if now >= self._next_reap_at:
            self._reap(now)
        return out

    def receive(self, msg: GossipMessage, from_addr: str, now: float) -> list[Action]:
        """Handle one authenticated datagram from UDP ``from_addr``."""
        out: list[Action] = []
        self._n["updates_received"] += len(msg.updates)
        for update in msg.updates:
            self._apply(update, now, out)
        if isinstance(msg, Ping):
            if msg.target == self._me.name:
                # A member we declared dead is probing us (it was paused or cut off): tell
                # it first thing, so it learns it was removed instead of carrying on.
                sender = self._members.get(msg.source)
                first = (sender.update(self._me.name)
                         if sender is not None and sender.status == "dead" else None)
                self._send(out, from_addr, Ack(msg.seq), first=first)
            else:  # a new process at an old address must not answer for its predecessor
                self._n["misdirected_pings"] += 1
        elif isinstance(msg, Ack):
            self._on_ack(msg.seq, out)
        elif isinstance(msg, Nack):
            probe = self._probe
            if probe is not None and probe.seq == msg.seq:
                probe.nacks += 1
                self._n["nacks_received"] += 1
        elif isinstance(msg, PingReq):
            if len(self._relays) < _MAX_RELAYS:
                self._n["relays"] += 1
                seq = self._next_seq()
                wait = min(msg.timeout_ms / 1000, _MAX_RELAY_WAIT_S)
                self._relays[seq] = _Relay(from_addr, msg.seq, now + wait)
                self._send(out, gossip_address(msg.target_address),
                           Ping(seq, msg.target, self._me.name))
        elif msg.seq > 0:  # Gossip asking for an ack
            self._send(out, from_addr, Ack(msg.seq))
        return out

    def leave(self, now: float) -> list[Action]:
        """Leave gracefully: tell every live member, and stop probing.

        Resends to members that did not ack every ``probe_timeout_s``; see
        :attr:`leave_acknowledged`.
        """
        if self._leaving:
            return []
        out: list[Action] = []
        self._leaving = True
        self._me.status = "left"
        self._me.since = now
        self._changed()
        self._broadcast(self._me)
        self._probe = None
        for rec in self._members.values():
            if rec.status in _LIVE:
                self._leave_pending[self._next_seq()] = rec.name
        self._send_leave(out, now)
        return out

    def local_state(self) -> bytes:
        """This node's full member table, encoded for a push-pull exchange."""
        updates = tuple(r.update() for r in (self._me, *self._members.values()))
        return encode_sync_state(SyncState(self._me.name, updates))

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
            if u.status == "dead" and u.name in self._members and not u.downed:
                u = msgspec.structs.replace(u, status="suspect", by=u.by or state.source)
            self._apply(u, now, out)
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

    # ------------------------------------------------------------------ probing

    def _start_probe(self, now: float, out: list[Action]) -> None:
        s = self.settings
        self._next_probe_at = now + self.health.scale(s.probe_interval_s)
        self._probe = None
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(target.name, seq, now + self.health.scale(s.probe_timeout_s),
                             self._next_probe_at)
        self._n["probes_sent"] += 1
        # Lifeguard's buddy system: tell a suspect first, so it can refute at once.
        first = target.update(self._me.name) if target.status == "suspect" else None
        self._send(out, gossip_address(target.address), Ping(seq, target.name, self._me.name),
                   first=first)

    def _next_target(self) -> _Record | None:
        for _ in range(len(self._order) + 1):
            if self._order_index >= len(self._order):
                self._order = [n for n, r in self._members.items() if r.status in _LIVE]
                self._random.shuffle(self._order)
                self._order_index = 0
                if not self._order:
                    return None
            name = self._order[self._order_index]
            self._order_index += 1
            rec = self._members.get(name)
            if rec is not None and rec.status in _LIVE:
                return rec
        return None

    def _add_to_order(self, name: str) -> None:
        # A random position, like memberlist, so a newcomer is probed within a round.
        pos = self._random.randint(0, len(self._order))
        self._order.insert(pos, name)
        if pos < self._order_index:
            self._order_index += 1

    def _probe_indirectly(self, probe: _Probe, now: float, out: list[Action]) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target)
        if target is None or target.status not in _LIVE:
            return
        helpers = [r for r in self._members.values()
                   if r.status == "alive" and r.name != probe.target]
        chosen = self._random.sample(helpers, min(self.settings.indirect_probes, len(helpers)))
        # Helpers nack at 80% of our remaining window, so the nack is back before we judge.
        timeout_ms = max(1, int((probe.end_at - now) * 800))
        for helper in chosen:
            self._send(out, gossip_address(helper.address),
                       PingReq(probe.seq, target.name, target.address, timeout_ms,
                               self._me.name))
        probe.expected_nacks = len(chosen)
        self._n["ping_reqs_sent"] += len(chosen)

    def _finish_probe(self, probe: _Probe, now: float, out: list[Action]) -> None:
        self._probe = None
        if probe.acked:
            return
        rec = self._members.get(probe.target)
        if rec is None or rec.status not in _LIVE:
            return  # it left or was declared dead meanwhile: nobody's fault
        self._n["probes_failed"] += 1
        self.health.probe_failed(probe.expected_nacks, probe.nacks)
        self._apply(rec.update(), now, out, suspect_by=self._me.name)

    def _on_ack(self, seq: int, out: list[Action]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if not probe.acked:
                probe.acked = True
                self._n["probes_acked"] += 1
                self.health.probe_succeeded()
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(out, relay.reply_to, Ack(relay.seq))
            return
        self._leave_pending.pop(seq, None)

    # ------------------------------------------------------------------ state rules

    def _apply(self, u: Update, now: float, out: list[Action], *,
               suspect_by: str | None = None) -> None:
        """Apply one update; ``suspect_by`` turns it into a suspicion by that member."""
        if suspect_by is not None:
            u = msgspec.structs.replace(u, status="suspect", by=suspect_by)
        if u.name == self._me.name:
            self._about_me(u, out)
            return
        if u.downed and u.status == "dead":
            if not self._downed_by_downed(u):
                self._apply_downed(u, now, out)
            return  # a downed member's verdicts about others do not count
        if u.status in _LIVE and self._is_downed(u.name, u.incarnation):
            return  # a downed life refuting: it must go, or come back as a new one
        rec = self._members.get(u.name)
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
            if rec.status not in _LIVE:
                return  # only a newer alive brings a dead member back
            if rec.status == "suspect" and u.incarnation == rec.incarnation:
                assert rec.suspicion is not None
                if rec.suspicion.confirm(u.by):
                    self._broadcast(rec, by=u.by)  # pass the confirmation on
                return
            self._suspect(rec, u.incarnation, u.by, now, out)
            return
        # dead or left
        if _RANK[u.status] <= _RANK[rec.status] and u.incarnation == rec.incarnation:
            return
        if u.status == "dead" and rec.status in _LIVE and self._stale_verdict(u, now):
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
                self._changed()
                out.append(MemberEvent("updated", rec.member(), previous))
            return
        self._declare(rec, u.incarnation, u.status, u.by, now, out)

    def _stale_verdict(self, u: Update, now: float) -> bool:
        """Whether the death ``u`` was declared by a member this node holds dead, or
        held dead until lately (within the longest suspicion): its view was cut off."""
        if not u.by or u.by in (u.name, self._me.name):
            return False
        decider = self._members.get(u.by)
        if decider is None:
            return False
        if decider.status not in _LIVE:
            return True
        back = self._back.get(u.by)
        return back is not None and now - back < suspicion_timeouts(
            self.settings, self.live_count())[1]

    def down(self, names: Iterable[str], now: float) -> list[Action]:
        """A split-brain decision removed ``names`` (their current lives): declare them
        dead for good. Their refutations are refused from now on, and they learn it from
        the next exchange with this node (the ``downed`` flag); a restarted process, a
        newer life, is a member again."""
        out: list[Action] = []
        for name in names:
            rec = self._members.get(name)
            if rec is None or name == self._me.name:
                continue
            self._apply_downed(rec.update(self._me.name), now, out)
        return out

    def _downed_by_downed(self, u: Update) -> bool:
        """Whether the decision ``u`` was taken by a member that was downed itself: a
        node cut off from most of the cluster may decide on a partial view before it
        downs itself, and its verdicts must not take the majority down after a heal."""
        decider = self._members.get(u.by)
        return decider is not None and decider.downed

    def _is_downed(self, name: str, incarnation: int) -> bool:
        downed = self._downed.get(name)
        return downed is not None and incarnation < downed + SAME_LIFE

    def _apply_downed(self, u: Update, now: float, out: list[Action]) -> None:
        rec = self._members.get(u.name)
        if rec is None:
            before = self._downed.get(u.name)
            self._downed[u.name] = max(u.incarnation, before or 0)
            if self._downed[u.name] != before:
                # No member changed, but subscribers read ``downed()`` (a node that
                # joined after the member died must learn of the decision too).
                self._changed()
            self._learn(u, now, out)  # remembers the tombstone
            return
        if u.incarnation + SAME_LIFE <= rec.incarnation:
            return  # about an older life: this one is a newer process
        if rec.downed and rec.incarnation >= u.incarnation:
            return
        self._downed[u.name] = max(u.incarnation, rec.incarnation,
                                   self._downed.get(u.name, 0))
        rec.downed = True
        incarnation = max(u.incarnation, rec.incarnation)
        if rec.status in _LIVE:
            self._declare(rec, incarnation, "dead", u.by, now, out, downed=True)
            return
        # Already dead or left by detection: the decision is news all the same.
        previous = rec.member()
        rec.incarnation = incarnation
        self._changed()
        out.append(MemberEvent("updated", rec.member(), previous, u.by, downed=True))
        self._broadcast(rec, by=u.by)

    def _learn(self, u: Update, now: float, out: list[Action]) -> None:
        tomb = self._tombstones.get(u.name)
        if tomb is not None and u.incarnation <= tomb:
            return
        if u.status in ("dead", "left"):
            # Never seen alive: remember only that this incarnation is over.
            self._tombstones[u.name] = u.incarnation
            return
        self._tombstones.pop(u.name, None)
        rec = _Record(u.name, u.address, u.incarnation, "alive", u.role, now)
        self._members[u.name] = rec
        self._live_others += 1
        self._add_to_order(u.name)
        self._changed()
        out.append(MemberEvent("joined", rec.member(), None))
        if u.status == "suspect":
            self._suspect(rec, u.incarnation, u.by, now, out)
        else:
            self._broadcast(rec)

    def _revive(self, rec: _Record, u: Update, now: float, out: list[Action]) -> None:
        previous = rec.member()
        was = rec.status
        if rec.downed:  # a newer life of a downed member (the old one is refused)
            rec.downed = False
            self._downed.pop(rec.name, None)
        rec.incarnation, rec.address, rec.role = u.incarnation, u.address, u.role
        rec.status, rec.since, rec.suspicion = "alive", now, None
        self._suspects.pop(rec.name, None)
        if was not in _LIVE:
            self._live_others += 1
            self._add_to_order(rec.name)
            if was == "dead":
                self._back[rec.name] = now
        self._changed()
        kind: MemberEventKind = (
            "joined" if was not in _LIVE else "alive" if was == "suspect" else "updated"
        )
        out.append(MemberEvent(kind, rec.member(), previous))
        self._broadcast(rec)

    def _suspect(self, rec: _Record, incarnation: int, by: str, now: float,
                 out: list[Action]) -> None:
        previous = rec.member()
        min_s, max_s, k = suspicion_timeouts(self.settings, self.live_count())
        scale = self.health.multiplier  # a sick node accuses later
        rec.status, rec.incarnation, rec.since = "suspect", incarnation, now
        rec.suspicion = _Suspicion(now, min_s * scale, max_s * scale, k, by)
        self._suspects[rec.name] = None
        self._n["suspicions"] += 1
        self._changed()
        out.append(MemberEvent("suspected", rec.member(), previous, by))
        self._broadcast(rec, by=by)

    def _declare(self, rec: _Record, incarnation: int, status: UpdateStatus, by: str,
                 now: float, out: list[Action], *, downed: bool = False) -> None:
        previous = rec.member()
        if rec.status in _LIVE:
            self._live_others -= 1
        rec.status, rec.incarnation, rec.since, rec.suspicion = status, incarnation, now, None
        self._suspects.pop(rec.name, None)
        self._changed()
        out.append(MemberEvent("left" if status == "left" else "dead", rec.member(), previous,
                              by, downed))
        self._broadcast(rec, by=by)

    def _about_me(self, u: Update, out: list[Action]) -> None:
        me = self._me
        if self._leaving:
            return
        if u.status == "alive":
            if u.incarnation > me.incarnation:
                self._refute(u.incarnation, out)  # a previous life ran ahead: jump past it
            elif u.incarnation == me.incarnation and u.address != me.address:
                self._n["name_conflicts"] += 1
            return
        if u.status == "dead" and u.incarnation >= self._first_incarnation:
            if u.downed and not self._downed_by_downed(u):
                # A split-brain decision removed this life: no refutation brings it back.
                out.append(MemberEvent("declared_dead", me.member(), None, u.by, True))
                return
            if u.incarnation > self._declared_at:
                # The others' failure detector declared this life dead, even if we
                # refuted a suspicion since: they may have moved our keys. Refute, and
                # let the node drop what went stale (once per declared incarnation: the
                # rumour goes round a few times).
                self._declared_at = u.incarnation
                out.append(MemberEvent("declared_dead", me.member(), None, u.by))
        if u.incarnation < me.incarnation:
            return
        self.health.refuted()
        self._refute(u.incarnation, out)

    def _refute(self, incarnation: int, out: list[Action]) -> None:
        previous = self._me.member()
        self._me.incarnation = incarnation + 1
        self._n["refutations"] += 1
        self._changed()
        out.append(MemberEvent("updated", self._me.member(), previous))
        self._broadcast(self._me)

    # ------------------------------------------------------------------ sync, leave, reap

    def _start_syncs(self, now: float, out: list[Action]) -> None:
        s = self.settings
        alive = [r for r in self._members.values() if r.status == "alive"]
        if alive:
            out.append(StartSync(self._random.choice(alive).address))
            self._next_sync_at = now + s.sync_interval_s
        elif self._seeds:
            out.append(StartSync(self._random.choice(self._seeds)))
            self._next_sync_at = now + s.join_retry_s
        else:
            self._next_sync_at = now + s.sync_interval_s
        dead = [r for r in self._members.values() if r.status == "dead"]
        if dead:  # reconnect: heals the views after a partition
            out.append(StartSync(self._random.choice(dead).address))

    def _reconnect(self, now: float, out: list[Action]) -> None:
        """A push-pull with one member declared dead by failure detection only: if the
        cut or pause has ended, it hears of its death at once and refutes it (a member
        that is not probed would otherwise wait for its own next sync, up to
        ``sync_interval_s``, while the split-brain timer runs)."""
        self._next_reconnect_at = now + self.settings.reconnect_interval_s
        unreachable = [r for r in self._members.values() if r.status == "dead" and not r.downed]
        if unreachable:
            out.append(StartSync(self._random.choice(unreachable).address))

    def _send_leave(self, out: list[Action], now: float) -> None:
        me = self._me.update()
        for seq, name in self._leave_pending.items():
            rec = self._members.get(name)
            if rec is not None:
                self._send(out, gossip_address(rec.address), Gossip(seq, self._me.name),
                           first=me)
        self._leave_resend_at = now + self.settings.probe_timeout_s

    def _reap(self, now: float) -> None:
        self._next_reap_at = now + self.settings.forget_after_s / 10
        horizon = now - self.settings.forget_after_s
        for name, at in list(self._back.items()):
            if at <= horizon:
                del self._back[name]
        for name, rec in list(self._members.items()):
            if rec.status not in _LIVE and rec.since <= horizon:
                del self._members[name]
                self._tombstones[name] = rec.incarnation
                self._queue.discard(name)
                self._changed()

    # ------------------------------------------------------------------ plumbing

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _changed(self) -> None:
        self._version += 1

    def _broadcast(self, rec: _Record, by: str = "") -> None:
        update = rec.update(by)
        self._queue.add(rec.name, update, len(self._codec.encode(update)))

    def _send(self, out: list[Action], address: str, msg: GossipMessage, *,
              first: Update | None = None) -> None:
        """Queue ``msg`` for ``address`` with as many piggybacked updates as fit."""
        body = self._codec.encode(msg)
        # +2: the updates array header grows from 1 byte (empty) to at most 3.
        budget = self.settings.max_datagram_bytes - SEAL_OVERHEAD - len(body) - 2
        updates: list[Update] = []
        if first is not None:
            size = len(self._codec.encode(first))
            if size <= budget:
                updates.append(first)
                budget -= size
        updates += self._queue.select(budget, self.live_count(),
                                      skip=first.name if first is not None else None)
        if updates:
            msg = msgspec.structs.replace(msg, updates=tuple(updates))
            body = self._codec.encode(msg)
        out.append(Send(address, msg, body))

    def __repr__(self) -> str:
        return (f"<SwimProtocol {self._me.name}@{self._me.incarnation}"
                f" [{self.live_count()} live of {len(self._members) + 1},"
                f" health x{self.health.multiplier}, {len(self._queue)} queued]>")
