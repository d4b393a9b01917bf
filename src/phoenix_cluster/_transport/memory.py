"""An in-process network: whole nodes talk through it with no sockets (unit tests).

:class:`MemoryNetwork` is shared by every node of a test; each node gets a
:class:`MemoryTransport` from it (the same :class:`~.base.Transport` seam as TCP) and,
for gossip, an in-memory datagram endpoint (:meth:`MemoryNetwork.open_datagram_endpoint`,
what ``loop.create_datagram_endpoint`` is to the UDP socket). Every frame is encoded with
the wire codec and decoded on the far side, so a message that does not encode, or is
larger than ``max_frame_bytes``, fails exactly as it would on the wire; inbound Calls
and Casts run in the same :class:`~.inbound.InboundRunner` as a TCP connection's.

Faults the test injects, on the node names:

- **cuts** (:meth:`~MemoryNetwork.cut`, :meth:`~MemoryNetwork.heal`): frames and
  datagrams between the sides are lost (requests time out, as on a black-holed link)
  and new dials fail at once (``ConnectionBroken``, definite);
- **loss** and **delay** per direction (:meth:`~MemoryNetwork.set_link`): a frame is
  lost with probability ``loss`` (from the network's seeded random source), or delivered
  ``delay_s`` later on the node's clock; order per connection is kept;
- **resets** (:meth:`~MemoryNetwork.disconnect`): one connection breaks, as a TCP reset
  does (pending requests fail with an unknown outcome; the next request dials again);
- **kills** (:meth:`~MemoryNetwork.kill`): a crash; every connection of the node breaks
  at once (its peers' pending requests fail with an unknown outcome), it can be dialled
  no more and its datagrams go nowhere;
- **jitter** and **duplication** of datagrams (``jitter_s``, ``duplicate``): each
  datagram waits up to ``jitter_s`` more (so datagrams overtake each other) and is
  delivered twice with probability ``duplicate``; frames keep their order and are never
  duplicated, as on TCP.

``trace``, when set, receives one line per frame and datagram sent (with its encoded
bytes): the whole-system simulator hashes them (``phoenix_cluster.testing.simulation``).

There is no handshake on the wire and no keepalive: the secret, name, incarnation and
role are compared directly when a connection is made (a wrong secret is an
``AuthenticationError``), and a cut link stays "open" until a kill or a close.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from phoenix_cluster._foundation.env import Clock, Env, TimerHandle
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.messages import Call, Cast, Error, Frame, Goodbye, Redirect, Reply
from phoenix_cluster.errors import (
    AuthenticationError,
    CallTimeout,
    ConfigError,
    NodeClosed,
    ProtocolError,
)

from .base import (
    ConnectionBroken,
    ConnectionClosed,
    ConnectionState,
    ConnectionStatistics,
    InboundHandler,
    Transport,
    TransportError,
    TransportStatistics,
)
from .inbound import InboundRunner
from .tcp import format_address, parse_address

__all__ = ["MemoryConnection", "MemoryNetwork", "MemoryTransport"]

_log = logging.getLogger("phoenix_cluster.transport")

_Answer = Reply | Error | Redirect
_MAX_INBOUND_TASKS = 10_000


class _Pipe:
    """One direction of a link: frames delivered in order, each after its delay."""

    __slots__ = ("_alive", "_clock", "_deliver", "_queue", "_timer")

    def __init__(self, clock: Clock, deliver: Callable[[bytes], None],
                 alive: Callable[[], bool]) -> None:
        self._clock = clock
        self._deliver = deliver
        self._alive = alive
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: TimerHandle | asyncio.Handle | None = None

    def put(self, body: bytes, delay_s: float) -> None:
        now = self._clock.monotonic()
        due = now + delay_s
        if self._queue:
            due = max(due, self._queue[-1][0])  # never overtake an earlier frame
        self._queue.append((due, body))
        if self._timer is None:
            self._arm(due - now)

    def _arm(self, delay_s: float) -> None:
        if delay_s <= 0:
            self._timer = asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._timer = self._clock.call_later(delay_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, body = self._queue.popleft()
            if self._alive():  # a cut or a kill since it was sent loses it
                self._deliver(body)
        if self._queue:
            self._arm(self._queue[0][0] - now)

    def clear(self) -> None:
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class MemoryConnection:
    """One end of an in-memory link: a :class:`~.base.PeerConnection`."""

    def __init__(self, owner: MemoryTransport, peer: MemoryTransport, *,
                 outbound: bool) -> None:
        self._owner, self.outbound = owner, outbound
        self._peer_name, self._peer_address = peer.node_name, peer.address or ""
        self._peer_incarnation, self._peer_role = peer.incarnation, peer.role
        self._clock = owner.env.clock
        self._codec = WireCodec()
        self._state: ConnectionState = "open"
        self._pending: dict[int, asyncio.Future[_Answer]] = {}
        self._inbound = InboundRunner(self, owner.handler, answer=self._answer,
                                      on_idle=_nothing, limit=_MAX_INBOUND_TASKS,
                                      name=self._peer_address)
        self._closed = asyncio.Event()
        self._close_exc: TransportError | None = None
        self.other: MemoryConnection | None = None
        self._pipe = _Pipe(self._clock, self._to_other, self._carries)
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # --- PeerConnection ------------------------------------------------------------

    @property
    def peer_name(self) -> str:
        return self._peer_name

    @property
    def peer_address(self) -> str:
        return self._peer_address

    @property
    def peer_incarnation(self) -> int:
        return self._peer_incarnation

    @property
    def peer_role(self) -> str:
        return self._peer_role

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    async def request(self, call: Call | Cast, timeout_s: float) -> _Answer:
        rid = call.request_id
        self._check_open(rid)
        if rid in self._pending:
            raise ValueError(f"request id {rid} is already in flight to {self._peer_name}")
        body = self._encode(call)
        fut: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._put(body)
        timer = self._clock.call_later(timeout_s, lambda: self._expire(rid, timeout_s))
        try:
            return await fut
        finally:
            timer.cancel()
            if self._pending.get(rid) is fut:
                del self._pending[rid]

    async def send(self, frame: Frame, *, timeout_s: float | None = None) -> None:
        self._check_open(getattr(frame, "request_id", None))
        self._put(self._encode(frame))

    def close(self, reason: str = "closed") -> None:
        """Close gracefully: the peer hears a Goodbye after what was already sent."""
        if self._state != "open":
            return
        self._put(self._codec.encode(Goodbye(reason=reason)))
        self._end(ConnectionClosed(f"connection to {self._peer_name} closed ({reason})",
                                   peer=self._peer_name))

    def fail(self, why: str) -> None:
        """Break both ends at once, as a crash or a reset does."""
        self._end(ConnectionBroken(why, peer=self._peer_name))
        other = self.other
        if other is not None:
            other._end(ConnectionBroken(why, peer=other.peer_name))

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            peer_name=self._peer_name, peer_address=self._peer_address,
            outbound=self.outbound, state=self._state, pending_requests=len(self._pending),
            queued_frames=0, inbound_tasks=self._inbound.count, frames_sent=self._sent,
            frames_received=self._received, bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received, writes=self._sent)

    # --- the wire ------------------------------------------------------------------

    def _check_open(self, rid: int | None) -> None:
        if self._state != "open":
            exc = self._close_exc
            cls = type(exc) if exc is not None else ConnectionClosed
            why = exc.message if exc is not None else f"the connection is {self._state}"
            raise cls(f"cannot send to {self._peer_name}: {why}", peer=self._peer_name,
                      definite=True, request_id=rid)

    def _encode(self, frame: Frame) -> bytes:
        body = self._codec.encode(frame)
        limit = self._owner.max_frame_bytes
        if len(body) > limit:
            raise ProtocolError(f"{type(frame).__name__} of {len(body):,} bytes exceeds"
                                f" max_frame_bytes {limit:,} (to {self._peer_name});"
                                " nothing was sent")
        return body

    def _put(self, body: bytes) -> None:
        self._sent += 1
        self._bytes_sent += len(body)
        net = self._owner.network
        if net.trace is not None:
            net.trace(f"{self._clock.monotonic()!r} frame {self._owner.node_name}"
                      f" {self._peer_name}", body)
        if net.loses(self._owner.node_name, self._peer_name):
            return
        self._pipe.put(body, net.delay(self._owner.node_name, self._peer_name))

    def _carries(self) -> bool:
        return self._owner.network.reachable(self._owner.node_name, self._peer_name)

    def _to_other(self, body: bytes) -> None:
        other = self.other
        if other is not None:
            other._receive(body)

    def _receive(self, body: bytes) -> None:
        if self._state != "open":
            return
        self._received += 1
        self._bytes_received += len(body)
        try:
            msg = self._codec.decode(body)
        except ProtocolError as exc:  # as TCP does: a peer that sends garbage is cut off
            _log.warning("closing in-memory connection to %s: %s", self._peer_name, exc)
            self.fail(f"protocol error from {self._peer_name}: {exc.message}")
            return
        if isinstance(msg, Reply | Error | Redirect):
            fut = self._pending.pop(msg.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, Call | Cast):
            self._inbound.start(msg)
        elif isinstance(msg, Goodbye):
            self._end(ConnectionBroken(f"{self._peer_name} closed the connection"
                                       f" ({msg.reason})", peer=self._peer_name))

    def _answer(self, frame: _Answer) -> None:
        if self._state != "open":
            return  # the peer is gone; nobody to answer
        try:
            body = self._encode(frame)
        except ProtocolError as exc:  # e.g. a result bigger than max_frame_bytes
            body = self._codec.encode(Error(request_id=frame.request_id, code=exc.code,
                                            message=exc.message, definite=False))
        self._put(body)

    def _expire(self, rid: int, timeout_s: float) -> None:
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(CallTimeout(f"no reply from {self._peer_name} to request"
                                          f" {rid} within {timeout_s}s", request_id=rid))

    def _end(self, exc: TransportError) -> None:
        if self._state != "open":
            return
        self._state, self._close_exc = "closing", exc
        if isinstance(exc, ConnectionBroken):
            self._pipe.clear()  # a crash loses what was still in flight
        pending, self._pending = self._pending, {}
        for rid, fut in pending.items():
            if not fut.done():
                fut.set_exception(type(exc)(exc.message, peer=exc.peer, request_id=rid))
        self._inbound.cancel()
        self._owner.spawn_close(self)

    async def finish_close(self) -> None:
        await self._inbound.wait()
        self._state = "closed"
        self._closed.set()
        self._owner.connection_closed(self)

    def __repr__(self) -> str:
        return (f"<MemoryConnection {self._owner.node_name} -> {self._peer_name}"
                f" [{self._state}, {len(self._pending)} pending,"
                f" {self._inbound.count} inbound]>")


class MemoryTransport:
    """A node's :class:`~.base.Transport` on a :class:`MemoryNetwork`.

    Args:
        network: the shared network.
        node_name, incarnation, secret, env, bus, max_frame_bytes, handler, role: as for
            :class:`~.tcp.TcpTransport`.
    """

    protocol = "memory"

    def __init__(self, network: MemoryNetwork, node_name: str, incarnation: int,
                 secret: bytes, *, env: Env, bus: TelemetryBus, max_frame_bytes: int,
                 handler: InboundHandler, role: str = "member") -> None:
        if not node_name:
            raise ConfigError("node_name must not be empty", key="name")
        self.network, self.node_name, self.incarnation = network, node_name, incarnation
        self.secret, self.env, self.bus = secret, env, bus
        self.max_frame_bytes, self.handler, self.role = max_frame_bytes, handler, role
        self.address: str | None = None
        self._state = "new"
        self._conns: dict[str, MemoryConnection] = {}  # peer name -> open connection
        self._closing: set[MemoryConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dial_attempts = self._accepted = self._auth_failures = 0

    async def start(self, listen: str) -> str:
        if self._state != "new":
            raise RuntimeError(f"{self!r} cannot start: it is {self._state}")
        self.address = self.network.listen(self, listen)
        self._state = "running"
        return self.address

    async def connect(self, address: str) -> MemoryConnection:
        if self._state in ("closing", "closed"):
            raise NodeClosed(f"transport of {self.node_name} is {self._state}")
        self._dial_attempts += 1
        peer = self.network.dial(self, address)
        conn = self._conns.get(peer.node_name)
        if conn is not None and conn.is_open:
            if conn.peer_incarnation == peer.incarnation:
                return conn
            conn.fail(f"{peer.node_name} restarted")
        if peer.secret != self.secret:
            self._auth_failures += 1
            raise AuthenticationError(f"{address} does not share our cluster secret")
        ours = MemoryConnection(self, peer, outbound=True)
        theirs = MemoryConnection(peer, self, outbound=False)
        ours.other, theirs.other = theirs, ours
        old = peer._conns.get(self.node_name)
        if old is not None:
            old.fail(f"{self.node_name} reconnected")
        self._conns[peer.node_name] = ours
        peer._conns[self.node_name] = theirs
        peer._accepted += 1
        return ours

    def peer_connection(self, peer_name: str) -> MemoryConnection | None:
        """The open connection to ``peer_name``, if any."""
        return self._conns.get(peer_name)

    def spawn_close(self, conn: MemoryConnection) -> None:
        if self._conns.get(conn.peer_name) is conn:
            del self._conns[conn.peer_name]
        self._closing.add(conn)
        task = asyncio.get_running_loop().create_task(conn.finish_close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connection_closed(self, conn: MemoryConnection) -> None:
        self._closing.discard(conn)

    def connections(self) -> list[MemoryConnection]:
        """Every connection, including ones still closing."""
        return [*self._conns.values(), *self._closing]

    def crash(self) -> None:
        """Break every connection at once, as the death of the process does."""
        self._state = "closed"
        for conn in list(self._conns.values()):
            conn.fail(f"{self.node_name} crashed")

    async def aclose(self) -> None:
        if self._state == "closed":
            await self._wait_tasks()
            return
        self._state = "closing"
        self.network.unlisten(self)
        for conn in list(self._conns.values()):
            conn.close("shutdown")
        await self._wait_tasks()
        self._state = "closed"

    async def _wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            node=self.node_name, address=self.address, state=self._state,
            connections=len(self._conns) + len(self._closing),
            peers=sum(1 for c in self._conns.values() if c.is_open), handshaking=0,
            dial_attempts=self._dial_attempts, accepted=self._accepted,
            handshake_failures=self._auth_failures, auth_failures=self._auth_failures,
            protocol_errors=0)

    def __repr__(self) -> str:
        return (f"<MemoryTransport {self.node_name}@{self.address or '-'} [{self._state},"
                f" {len(self._conns)} connections]>")


class _MemoryDatagrams(asyncio.DatagramTransport):
    """A gossip endpoint on the network: ``sendto`` delivers to another endpoint."""

    def __init__(self, network: MemoryNetwork, local: tuple[str, int],
                 protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._network, self.local, self.protocol = network, local, protocol
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not self._closing:
            self._network.send_datagram(self, bytes(data), (str(addr[0]), int(addr[1])))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._network.drop_endpoint(self)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.local if name == "sockname" else default


class MemoryNetwork:
    """The shared in-process network of one test (see the module docstring).

    Args:
        seed: seeds the random source of ``loss``.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.random = random.Random(seed)
        self._listening: dict[str, MemoryTransport] = {}
        self._endpoints: dict[tuple[str, int], _MemoryDatagrams] = {}
        self._cuts: list[tuple[frozenset[str], frozenset[str]]] = []
        self._links: dict[tuple[str, str], tuple[float, float]] = {}  # (loss, delay_s)
        self._dead: set[str] = set()
        self._hosts = 0
        self.datagrams_delivered = self.datagrams_lost = 0
        self.default_link = (0.0, 0.0)
        """``(loss, delay_s)`` of every link :meth:`set_link` did not set."""
        self.jitter_s = 0.0
        self.duplicate = 0.0
        self.trace: Callable[[str, bytes], None] | None = None

    def address(self) -> str:
        """A fresh ``host:port`` for the next node (10.77.x.y, one host per node)."""
        self._hosts += 1
        return f"10.77.{self._hosts // 250}.{self._hosts % 250 + 1}:7946"

    def is_free(self, address: str) -> bool:
        """Whether nobody listens at ``address`` (frames or gossip): a node started
        again may take the address of its last life, as a restarted process does."""
        return (address not in self._listening
                and parse_address(address) not in self._endpoints)

    def transport(self, node_name: str, incarnation: int, secret: bytes, *, env: Env,
                  bus: TelemetryBus, max_frame_bytes: int, handler: InboundHandler,
                  role: str = "member") -> MemoryTransport:
        """A transport for the node ``node_name``; a killed name may come back."""
        self._dead.discard(node_name)
        return MemoryTransport(self, node_name, incarnation, secret, env=env, bus=bus,
                               max_frame_bytes=max_frame_bytes, handler=handler, role=role)

    # --- faults --------------------------------------------------------------------

    def cut(self, side: Iterable[str], other: Iterable[str] | None = None) -> None:
        """Lose everything between ``side`` and ``other`` (default: everyone else)."""
        a = frozenset(side)
        b = frozenset(other) if other is not None else frozenset()
        self._cuts.append((a, b))

    def heal(self) -> None:
        """Remove every cut."""
        self._cuts.clear()

    def set_link(self, source: str, target: str, *, loss: float = 0.0,
                 delay_s: float = 0.0, both: bool = True) -> None:
        """Lose (``loss``, a probability) or delay what ``source`` sends ``target``."""
        if not 0.0 <= loss <= 1.0 or delay_s < 0:
            raise ValueError(f"loss must be in [0, 1] and delay_s >= 0, got {loss}, {delay_s}")
        self._links[(source, target)] = (loss, delay_s)
        if both:
            self._links[(target, source)] = (loss, delay_s)

    def kill(self, node_name: str) -> None:
        """Crash ``node_name``: its connections break, it cannot be reached any more."""
        self._dead.add(node_name)
        for address, transport in list(self._listening.items()):
            if transport.node_name == node_name:
                del self._listening[address]
                transport.crash()

    def disconnect(self, a: str, b: str) -> bool:
        """Break the connection between ``a`` and ``b`` (both ends, pending requests
        fail with an unknown outcome), as a TCP reset does; the next request dials
        again. Returns whether there was one."""
        for transport in self._listening.values():
            if transport.node_name == a:
                conn = transport.peer_connection(b)
                if conn is not None:
                    conn.fail(f"connection between {a} and {b} reset")
                    return True
        return False

    def reachable(self, source: str, target: str) -> bool:
        if source in self._dead or target in self._dead:
            return False
        for a, b in self._cuts:
            if b:
                if (source in a and target in b) or (source in b and target in a):
                    return False
            elif (source in a) != (target in a):
                return False
        return True

    def loses(self, source: str, target: str) -> bool:
        loss = self._links.get((source, target), self.default_link)[0]
        return loss > 0.0 and self.random.random() < loss

    def delay(self, source: str, target: str) -> float:
        return self._links.get((source, target), self.default_link)[1]

    # --- what transports and gossip endpoints use ------------------------------------

    def listen(self, transport: MemoryTransport, listen: str) -> str:
        host, port = parse_address(listen)
        if port == 0:
            port = 7946
        address = format_address((host, port))
        current = self._listening.get(address)
        if current is not None and current is not transport:
            raise ConfigError(f"cannot listen on {address}: {current.node_name} does",
                              key="listen")
        self._listening[address] = transport
        return address

    def unlisten(self, transport: MemoryTransport) -> None:
        address = transport.address
        if address is not None and self._listening.get(address) is transport:
            del self._listening[address]

    def dial(self, transport: MemoryTransport, address: str) -> MemoryTransport:
        peer = self._listening.get(address)
        if peer is None or not self.reachable(transport.node_name, peer.node_name):
            raise ConnectionBroken(f"cannot connect to {address}: nobody answers there",
                                   peer=address, definite=True)
        return peer

    def _name_at(self, addr: tuple[str, int]) -> str | None:
        transport = self._listening.get(format_address(addr))
        return None if transport is None else transport.node_name

    async def open_datagram_endpoint(
        self, local_addr: tuple[str, int],
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
    ) -> asyncio.DatagramTransport:
        """What ``loop.create_datagram_endpoint(factory, local_addr=...)`` is for UDP."""
        if local_addr in self._endpoints:
            raise ConfigError(f"cannot bind the gossip endpoint at"
                              f" {format_address(local_addr)}: it is taken", key="listen")
        protocol = protocol_factory()
        endpoint = _MemoryDatagrams(self, local_addr, protocol)
        self._endpoints[local_addr] = endpoint
        protocol.connection_made(endpoint)
        return endpoint

    def drop_endpoint(self, endpoint: _MemoryDatagrams) -> None:
        if self._endpoints.get(endpoint.local) is endpoint:
            del self._endpoints[endpoint.local]

    def send_datagram(self, source: _MemoryDatagrams, data: bytes,
                      target: tuple[str, int]) -> None:
        src, dst = self._name_at(source.local), self._name_at(target)
        endpoint = self._endpoints.get(target)
        loop = asyncio.get_running_loop()
        if self.trace is not None:
            self.trace(f"{loop.time()!r} datagram {src} {dst}", data)
        if (endpoint is None or src is None or dst is None or not self.reachable(src, dst)
                or self.loses(src, dst)):
            self.datagrams_lost += 1
            return
        deliver = partial(self._deliver, endpoint, data, source.local)
        copies = 2 if self.duplicate and self.random.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.delay(src, dst)
            if self.jitter_s:
                delay += self.random.uniform(0.0, self.jitter_s)
            if delay > 0:
                loop.call_later(delay, deliver)
            else:
                loop.call_soon(deliver)

    def _deliver(self, endpoint: _MemoryDatagrams, data: bytes,
                 source: tuple[str, int]) -> None:
        if endpoint.is_closing():
            self.datagrams_lost += 1
            return
        self.datagrams_delivered += 1
        endpoint.protocol.datagram_received(data, source)

    def __repr__(self) -> str:
        return (f"<MemoryNetwork {len(self._listening)} nodes, {len(self._cuts)} cuts,"
                f" {len(self._dead)} dead>")


def _nothing() -> None:
    pass


if TYPE_CHECKING:  # mypy proves the seam is honoured: MemoryTransport is a Transport

    def _is_transport(t: MemoryTransport) -> Transport:
        return t
