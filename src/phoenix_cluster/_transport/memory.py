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

The faults live in :class:`~.memory_links.LinkModel` (which :class:`MemoryNetwork`
extends with the nodes listening, dials, kills, resets and the gossip endpoints), and a
link's two ends and the frames between them in :mod:`.memory_connection`; this module
keeps the transports and the network that joins them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import AuthenticationError, ConfigError, NodeClosed

from .base import ConnectionBroken, InboundHandler, Transport, TransportStatistics
from .memory_connection import MemoryConnection
from .memory_links import LinkModel
from .tcp import format_address, parse_address

__all__ = ["LinkModel", "MemoryConnection", "MemoryNetwork", "MemoryTransport"]



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


class MemoryNetwork(LinkModel):
    """The shared in-process network of one test (see the module docstring).

    Args:
        seed: seeds the random source of ``loss``.
    """

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._listening: dict[str, MemoryTransport] = {}
        self._endpoints: dict[tuple[str, int], _MemoryDatagrams] = {}
        self._hosts = 0
        self.datagrams_delivered = self.datagrams_lost = 0
        self.jitter_s = 0.0
        self.duplicate = 0.0

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


if TYPE_CHECKING:  # mypy proves the seam is honoured: MemoryTransport is a Transport

    def _is_transport(t: MemoryTransport) -> Transport:
        return t
