"""The membership service: drives :class:`~.swim.SwimProtocol` with a UDP socket and a clock.

Owns the gossip UDP endpoint (bound at :func:`~.messages.gossip_address` of the node's
TCP address), the protocol's timer, the event-loop lag probe that feeds Lifeguard's local
health, the push-pull tasks (run through the injected ``sync`` callable, which the node
routes over its authenticated TCP connections), versioned snapshots for other layers and
the ``node_joined`` / ``node_left`` / ``node_suspected`` telemetry. Every rule of the
protocol lives in ``swim.py``; this module only moves bytes and time, and the bytes
themselves go through ``gossip_socket.py`` (sealing, the endpoint, name resolution).
What it reports (the lag probe, member events as log lines and telemetry, its counters)
is ``reporting.py``.

Imports L0-L2 only. ``docs/design/membership.md`` describes the protocol.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Literal

from phoenix_cluster._foundation.env import Env, TimerHandle
from phoenix_cluster._telemetry.bus import TelemetryBus, default_bus
from phoenix_cluster._transport.tasks import TaskSet, fail_after
from phoenix_cluster.errors import PhoenixError

from .gossip_socket import DatagramOpener, GossipSocket
from .messages import GossipMessage, gossip_address, gossip_key
from .reporting import LoopLagProbe, MembershipStatistics, report_member_event
from .snapshot import MembershipSnapshot
from .swim import (
    Action,
    Send,
    StartSync,
    SwimProtocol,
    SwimSettings,
)

__all__ = [
    "MembershipService",
    "MembershipStatistics",
    "SnapshotCallback",
    "SwimSettings",
    "DatagramOpener",
    "SyncCall",
    "gossip_address",
]

_log = logging.getLogger("phoenix_cluster.membership")

SyncCall = Callable[[str, bytes], Awaitable[bytes]]
"""``sync(tcp_address, my_state) -> their_state``: one push-pull exchange over TCP."""
SnapshotCallback = Callable[[MembershipSnapshot], None]
class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    LEAVING = "leaving"
    CLOSED = "closed"


class MembershipService:
    """SWIM membership for one node.

    Args:
        name: this node's name.
        address: this node's TCP ``host:port`` as peers reach it; gossip binds UDP at
            ``gossip_address(address)``.
        incarnation: this life's incarnation (wall-clock ms at node start).
        secret: the cluster secret; datagrams are sealed with a key derived from it.
        sync: ``sync(tcp_address, my_state) -> their_state``, one push-pull exchange over
            the node's authenticated TCP connections; the far side answers with its
            :meth:`handle_sync`. May raise anything: a failed exchange is counted.
        seeds: TCP addresses to join through; retried until another member is known.
        role: ``member`` (hosts agents) or ``client`` (routes only).
        settings: timers and limits; see :class:`SwimSettings`.
        env: clock and randomness.
        bus: where telemetry goes (default: the process-wide bus).
        datagrams: binds the gossip endpoint (default: a UDP socket).
        on_declared_dead: called with ``(incarnation, by, downed)`` when peers declared
            this node's current life dead (:attr:`on_declared_dead`).
    """

    def __init__(self, name: str, address: str, incarnation: int, secret: bytes, *,
                 sync: SyncCall, seeds: Iterable[str] = (),
                 role: Literal["member", "client"] = "member",
                 settings: SwimSettings | None = None, env: Env | None = None,
                 bus: TelemetryBus | None = None,
                 datagrams: DatagramOpener | None = None,
                 on_declared_dead: Callable[[int, str, bool], object] | None = None,
                 ) -> None:
        self.settings = settings if settings is not None else SwimSettings()
        self.env = env if env is not None else Env()
        self.bus = bus if bus is not None else default_bus
        self._clock = self.env.clock
        self._sync = sync
        self._seeds = tuple(seeds)
        self._swim = SwimProtocol(name, address, incarnation, random=self.env.random,
                                  settings=self.settings, role=role,
                                  now=self._clock.monotonic())
        self._state = _State.NEW
        self._tasks = TaskSet(f"membership {name}")
        self._timer: TimerHandle | None = None
        self._timer_at = 0.0
        self._syncing: set[str] = set()
        self._subscribers: list[SnapshotCallback] = []
        self.on_declared_dead = on_declared_dead
        """Called with ``(incarnation, by, downed)`` when peers declared this node's
        current life dead (it was paused or cut off): ``downed`` if a split-brain decision
        removed it (the node must go), else only their failure detector did (it refutes
        and stays; the node drops what went stale)."""
        self._snapshot = MembershipSnapshot(self._swim.version, self._swim.members())
        self._leave_waiter: asyncio.Future[None] | None = None
        self._n = dict.fromkeys(
            ("datagrams_sent", "bytes_sent", "datagrams_received", "bytes_received",
             "dropped_unauthenticated", "dropped_malformed", "send_errors", "syncs_ok",
             "syncs_failed", "syncs_served"), 0)
        self._lag = LoopLagProbe(name, self._clock, self._swim.health, self.settings,
                                 running=lambda: self._state is _State.RUNNING)
        self._socket = GossipSocket(
            name, gossip_key(secret), clock=self._clock, tasks=self._tasks, counters=self._n,
            on_message=self._on_message,
            accepting=lambda: self._state in (_State.RUNNING, _State.LEAVING),
            opener=datagrams)

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        return self._swim.name

    @property
    def address(self) -> str:
        """This node's TCP address, as gossiped."""
        return self._swim.address

    @property
    def gossip_address(self) -> str:
        """Where this node's UDP endpoint listens."""
        return gossip_address(self._swim.address)

    async def start(self) -> None:
        """Bind the UDP endpoint, start the timers and join the seeds.

        Raises:
            ConfigError: the UDP port is taken or the address cannot be bound.
            RuntimeError: the service was started before.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"membership service is {self._state.value}; start it once")
        udp = self.gossip_address
        await self._socket.bind(udp)
        self._state = _State.RUNNING
        now = self._clock.monotonic()
        self._lag.start(now)
        self._run(self._swim.join(self._seeds, now))
        _log.info("membership %s gossips on udp %s, seeds %s", self.name, udp,
                  ", ".join(self._seeds) or "none")

    def down(self, names: Iterable[str]) -> None:
        """A split-brain decision removed ``names``: refuse their refutations and tell
        them (see :meth:`SwimProtocol.down`)."""
        if self._state in (_State.RUNNING, _State.LEAVING):
            self._run(self._swim.down(names, self._clock.monotonic()))

    def join(self, seeds: Iterable[str]) -> None:
        """Use ``seeds`` (TCP addresses) from now on, e.g. when discovery finds new ones.

        Starts a push-pull with each now (if running; else at :meth:`start`), and while no
        other member is known retries a random one every ``join_retry_s``.
        """
        self._seeds = tuple(seeds)
        if self._state is _State.RUNNING:
            self._run(self._swim.join(self._seeds, self._clock.monotonic()))

    async def aclose(self, *, leave: bool = True) -> None:
        """Close; by default leave gracefully first.

        Args:
            leave: gossip ``left`` to every member and wait up to ``leave_timeout_s`` for
                their acks, so they drop us at once. ``False`` just stops, as a crash
                would: the others find out by probing (tests use it to fake a crash).
        """
        if self._state in (_State.CLOSED, _State.LEAVING):
            return
        if self._state is _State.NEW:
            self._state = _State.CLOSED
            return
        self._state = _State.LEAVING
        if leave:
            self._run(self._swim.leave(self._clock.monotonic()))
        if leave and not self._swim.leave_acknowledged:
            self._leave_waiter = asyncio.get_running_loop().create_future()
            try:
                async with fail_after(self._clock, self.settings.leave_timeout_s):
                    await self._leave_waiter
            except TimeoutError:
                _log.info("membership %s: leave not acknowledged by every member within %ss",
                          self.name, self.settings.leave_timeout_s)
        self._state = _State.CLOSED
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._lag.stop()
        await self._tasks.aclose()
        self._socket.close()

    async def __aenter__(self) -> MembershipService:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ views

    def snapshot(self) -> MembershipSnapshot:
        """The current members, this node included; the version grows with every change."""
        return self._snapshot

    def downed(self) -> dict[str, int]:
        """Members a split-brain decision removed, here or elsewhere (name -> the
        incarnation of the removed life; see :meth:`SwimProtocol.downed`)."""
        return self._swim.downed()

    def subscribe(self, callback: SnapshotCallback) -> Callable[[], None]:
        """Call ``callback(snapshot)`` after every change; returns the unsubscribe function.

        Callbacks run synchronously inside the service and must be quick; one that raises
        is logged and kept.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def statistics(self) -> MembershipStatistics:
        return MembershipStatistics(
            version=self._snapshot.version, swim=self._swim.statistics(),
            health=self._swim.health.statistics(), loop_lag_max_s=self._lag.max_s,
            loop_lag_last_s=self._lag.last_s, **self._n,
        )

    def handle_sync(self, payload: bytes) -> bytes:
        """Answer a peer's push-pull: merge its state, return ours.

        Wire this to the inbound system call that the peer's ``sync`` makes.

        Raises:
            ProtocolError: ``payload`` is not a membership state; nothing was merged.
        """
        reply, actions = self._swim.handle_sync(payload, self._clock.monotonic())
        self._n["syncs_served"] += 1
        self._run(actions)
        return reply

    # ------------------------------------------------------------------ inputs

    def _on_message(self, msg: GossipMessage, source: str) -> None:
        try:
            actions = self._swim.receive(msg, source, self._clock.monotonic())
        except Exception:  # our bug; one bad datagram must not stop the endpoint
            self._socket.warn(source, "membership %s: failed to handle %s from %s", self.name,
                              type(msg).__name__, source, exc_info=True)
            return
        self._run(actions)

    def _on_timer(self) -> None:
        self._timer = None
        if self._state not in (_State.RUNNING, _State.LEAVING):
            return
        # asyncio may fire a timer up to its clock resolution early; never tick before it.
        self._run(self._swim.tick(max(self._clock.monotonic(), self._timer_at)))

    # ------------------------------------------------------------------ outputs

    def _run(self, actions: list[Action]) -> None:
        """Carry out the protocol's actions, publish a new snapshot, re-arm the timer."""
        for action in actions:
            if isinstance(action, Send):
                self._socket.send(action.address, action.body)
            elif isinstance(action, StartSync):
                self._start_sync(action.address)
            else:
                report_member_event(self.name, action, self.bus, self._swim.live_count,
                                    self.on_declared_dead)
        if self._swim.version != self._snapshot.version:
            self._publish()
        waiter = self._leave_waiter
        if waiter is not None and not waiter.done() and self._swim.leave_acknowledged:
            waiter.set_result(None)
        self._schedule()

    def _schedule(self) -> None:
        if self._state not in (_State.RUNNING, _State.LEAVING):
            return
        deadline = self._swim.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer_at <= deadline:
                return  # an earlier tick is armed; it will re-arm for this one
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer_at = deadline
            delay = max(0.0, deadline - self._clock.monotonic())
            self._timer = self._clock.call_later(delay, self._on_timer)

    def _start_sync(self, address: str) -> None:
        if address in self._syncing or address == self.address or self._state is not _State.RUNNING:
            return
        self._syncing.add(address)
        self._tasks.spawn(self._push_pull(address), name=f"membership-sync {address}")

    async def _push_pull(self, address: str) -> None:
        try:
            async with fail_after(self._clock, self.settings.sync_timeout_s):
                reply = await self._sync(address, self._swim.local_state())
            actions = self._swim.merge_state(reply, self._clock.monotonic())
        except asyncio.CancelledError:
            raise
        except (PhoenixError, OSError, TimeoutError) as exc:
            self._n["syncs_failed"] += 1
            _log.debug("membership %s: push-pull with %s failed: %r", self.name, address, exc)
            return
        except Exception as exc:
            self._n["syncs_failed"] += 1
            self._socket.warn(address, "membership %s: push-pull with %s failed: %r",
                              self.name, address, exc)
            return
        finally:
            self._syncing.discard(address)
        self._n["syncs_ok"] += 1
        if self._state in (_State.RUNNING, _State.LEAVING):
            self._run(actions)

    def _publish(self) -> None:
        self._snapshot = snap = MembershipSnapshot(self._swim.version, self._swim.members())
        for callback in list(self._subscribers):
            try:
                callback(snap)
            except Exception:
                _log.exception("membership %s: snapshot subscriber %r raised", self.name,
                               callback)

    def __repr__(self) -> str:
        snap = self._snapshot
        alive = sum(1 for m in snap.members if m.status == "alive")
        return (f"<MembershipService {self.name} udp {self.gossip_address}"
                f" [{self._state.value}, {alive} alive of {len(snap.members)}, v{snap.version}]>")
