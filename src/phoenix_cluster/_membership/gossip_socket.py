"""The gossip endpoint: sealed datagrams in and out of one UDP socket (or its stand-in).

:class:`GossipSocket` binds the endpoint membership gossips on (a UDP socket, or what an
injected :data:`DatagramOpener` gives, such as the in-memory network of unit tests),
seals every outgoing datagram with the cluster key and sends it, resolving a host name
once in the background (datagrams to it are dropped until then), and authenticates and
decodes every incoming one before handing the message on. What it drops (a bad tag, a
body that does not decode, a send that could not go) is counted and logged at most once
every 10 s per source (:meth:`GossipSocket.warn`). It knows nothing of the protocol:
:class:`~.service.MembershipService` feeds what arrives to SWIM.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from phoenix_cluster._foundation.env import Clock
from phoenix_cluster._transport.tasks import TaskSet
from phoenix_cluster._transport.tcp import format_address, parse_address
from phoenix_cluster.errors import ConfigError, ProtocolError

from .messages import GossipCodec, GossipMessage, seal, unseal

__all__ = ["DatagramOpener", "GossipSocket"]

_log = logging.getLogger("phoenix_cluster.membership")

DatagramOpener = Callable[[tuple[str, int], Callable[[], asyncio.DatagramProtocol]],
                          Awaitable[asyncio.DatagramTransport]]
"""``open(local_addr, protocol_factory) -> endpoint``: binds the gossip endpoint (UDP by
default; an in-memory network in unit tests, ``_transport/memory.py``)."""

_LOG_EVERY_S = 10.0  # at most one warning per source per this many seconds
_LOG_SOURCES_MAX = 4096


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, socket: GossipSocket) -> None:
        self._socket = socket

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._socket.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._socket.error(exc)


class GossipSocket:
    """One node's gossip endpoint.

    Args:
        name: the node's name (for log lines).
        key: the gossip key derived from the cluster secret.
        clock: for the rate of warnings.
        tasks: owns the background name lookups.
        counters: the service's counters (datagrams and bytes each way, drops, errors).
        on_message: called with each authentic, decoded message and its source address.
        accepting: whether datagrams are taken now (the service runs or leaves).
        opener: binds the endpoint (default: a UDP socket).
    """

    def __init__(self, name: str, key: bytes, *, clock: Clock, tasks: TaskSet,
                 counters: dict[str, int],
                 on_message: Callable[[GossipMessage, str], None],
                 accepting: Callable[[], bool], opener: DatagramOpener | None) -> None:
        self._name = name
        self._key = key
        self._clock = clock
        self._tasks = tasks
        self._n = counters
        self._on_message = on_message
        self._accepting = accepting
        self._opener = opener
        self._codec = GossipCodec()
        self._udp: asyncio.DatagramTransport | None = None
        self._resolved: dict[str, tuple[str, int] | None] = {}
        self._log_times: dict[str, float] = {}

    async def bind(self, address: str) -> None:
        """Bind the endpoint at ``address`` (``host:port``).

        Raises:
            ConfigError: the port is taken or the address cannot be bound.
        """
        host, port = parse_address(address)
        try:
            if self._opener is not None:
                transport = await self._opener((host, port), lambda: _Endpoint(self))
            else:
                transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: _Endpoint(self), local_addr=(host, port))
        except OSError as exc:
            raise ConfigError(f"cannot bind the gossip UDP socket at {address}:"
                              f" {exc.strerror or exc}", key="listen") from exc
        self._udp = transport

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    # ------------------------------------------------------------------ in

    def received(self, data: bytes, addr: Any) -> None:
        if not self._accepting():
            return
        self._n["datagrams_received"] += 1
        self._n["bytes_received"] += len(data)
        source = format_address(addr)
        body = unseal(self._key, data)
        if body is None:
            self._n["dropped_unauthenticated"] += 1
            self.warn(source, "dropped a %d-byte gossip datagram from %s: bad authentication"
                      " tag (another cluster or a wrong secret?)", len(data), source)
            return
        try:
            msg = self._codec.decode(body)
        except ProtocolError as exc:
            self._n["dropped_malformed"] += 1
            self.warn(source, "dropped a gossip datagram from %s: %s", source, exc)
            return
        self._on_message(msg, source)

    def error(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the member is probably down; probes decide.
        self._n["send_errors"] += 1
        _log.debug("membership %s: udp error %r", self._name, exc)

    # ------------------------------------------------------------------ out

    def send(self, address: str, body: bytes) -> None:
        """Seal ``body`` and send it to ``address`` (``host:port``), if it can go now."""
        udp = self._udp
        if udp is None or udp.is_closing():
            return
        target = self._resolve(address)
        if target is None:
            self._n["send_errors"] += 1
            return
        datagram = seal(self._key, body)
        udp.sendto(datagram, target)
        self._n["datagrams_sent"] += 1
        self._n["bytes_sent"] += len(datagram)

    def _resolve(self, address: str) -> tuple[str, int] | None:
        """``host:port`` to a socket address; host names resolve in the background."""
        if address in self._resolved:
            return self._resolved[address]
        try:
            host, port = parse_address(address)
        except ConfigError:
            self.warn(address, "cannot send gossip to %r: not HOST:PORT", address)
            return None
        try:
            ipaddress.ip_address(host)
        except ValueError:  # a host name: resolve once, off the event loop; drop until then
            if len(self._resolved) < _LOG_SOURCES_MAX:
                self._tasks.spawn(self._lookup(address, host, port),
                                  name=f"membership-resolve {address}")
            return None
        self._resolved[address] = (host, port)
        return host, port

    async def _lookup(self, address: str, host: str, port: int) -> None:
        if address in self._resolved:
            return
        self._resolved[address] = None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_DGRAM)
            sockaddr = infos[0][4]
            self._resolved[address] = (str(sockaddr[0]), int(sockaddr[1]))
        except OSError as exc:
            self._resolved.pop(address, None)  # try again on the next send
            self.warn(address, "cannot resolve gossip address %s: %s", address, exc)

    def warn(self, source: str, msg: str, *args: object, exc_info: bool = False) -> None:
        """Log a warning about ``source``, at most once every 10 s per source."""
        now = self._clock.monotonic()
        last = self._log_times.get(source)
        if last is not None and now - last < _LOG_EVERY_S:
            return
        if len(self._log_times) >= _LOG_SOURCES_MAX:
            self._log_times.clear()
        self._log_times[source] = now
        _log.warning(msg, *args, exc_info=exc_info)
