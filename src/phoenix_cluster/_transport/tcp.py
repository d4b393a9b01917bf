"""The TCP transport: listen, dial, authenticate, and keep one connection per peer pair.

:class:`TcpTransport` owns the listening socket, the dials in progress (shared by
concurrent callers of :meth:`~TcpTransport.connect`) and the registry of connections by
peer name. Both sides may dial; when two connections to the same peer exist, both
nodes keep the one dialled by the node with the lower name and retire the other
(see :mod:`.connection`), a rule each side applies alone once the handshake has told it
both names. A peer that comes back with a higher incarnation replaces its old
connection at once: that process is gone. The registry and that rule are
:mod:`.connection_registry`; addresses are :mod:`.addresses`.

TLS is the stdlib's: pass ``ssl.SSLContext`` objects for the server and client side
(``verify_mode=CERT_REQUIRED`` on the server context gives mutual TLS). The cluster
secret handshake runs inside TLS as well. Runs on asyncio or uvloop unchanged: only
public stream APIs are used.

Everything above the byte stream is shared with the HTTP/2 and QUIC transports
(:mod:`.http2`, :mod:`.quic`): they subclass this one and override only
:meth:`~TcpTransport._listen` and :meth:`~TcpTransport._open_stream`, which produce
asyncio stream pairs over one HTTP/2 or QUIC stream instead of a socket.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import AuthenticationError, ConfigError, NodeClosed, PhoenixError

from .addresses import format_address, parse_address, source_address
from .base import ConnectionBroken, InboundHandler, Transport, TransportStatistics
from .connection import TcpConnection
from .connection_registry import ConnectionRegistry
from .handshake import HandshakeTimeout
from .settings import TcpSettings
from .tasks import LogLimiter, TaskSet, fail_after

__all__ = ["TcpTransport", "format_address", "parse_address", "source_address"]

_log = logging.getLogger("phoenix_cluster.transport")

_State = Literal["new", "running", "closing", "closed"]


class Listener(Protocol):
    """What :meth:`TcpTransport._listen` returns: ``asyncio.Server`` or a look-alike."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class TcpTransport:
    """Authenticated, multiplexed TCP (optionally TLS) connections to peer nodes.

    Args:
        node_name: this node's name; the tie-break compares names, so they must differ.
        incarnation: this node's incarnation (a restart must present a higher one).
        secret: the cluster secret; see :func:`.cookie.resolve_secret`. Never logged.
        env: clock and randomness; every timeout and keepalive uses ``env.clock``.
        bus: telemetry; per-message events are emitted only while someone listens.
        max_frame_bytes: largest frame accepted or sent.
        handler: runs each inbound Call/Cast in its own task; see ``InboundHandler``.
        role: sent in the handshake: ``"member"`` or ``"client"``.
        ssl_server: TLS context for accepted connections (``None``: plain TCP).
        ssl_client: TLS context for dialled connections (``None``: plain TCP).
        **options: any other field of :class:`~.settings.TcpSettings`
            (``send_queue_frames``, ``keepalive_timeout_s``, ...).

    Raises:
        phx.ConfigError: a setting is out of range.
    """

    protocol: ClassVar[str] = "tcp"
    """The name in logs, ``repr`` and fallback chains (``"tcp"``, ``"http2"``, ``"quic"``)."""

    def __init__(self, node_name: str, incarnation: int, secret: bytes, *, env: Env,
                 bus: TelemetryBus, max_frame_bytes: int, handler: InboundHandler,
                 role: str = "member", ssl_server: ssl.SSLContext | None = None,
                 ssl_client: ssl.SSLContext | None = None, send_queue_frames: int = 10_000,
                 **options: float) -> None:
        if not node_name:
            raise ConfigError("node_name must not be empty", key="name")
        if not secret:
            raise ConfigError("the cluster secret must not be empty", key="cookie")
        try:
            self.settings = TcpSettings(max_frame_bytes=max_frame_bytes,
                                        send_queue_frames=send_queue_frames, **options)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"unknown transport option: {exc}", key="options") from exc
        self.node_name, self.incarnation, self.role = node_name, incarnation, role
        self.secret = secret
        self.env, self.bus, self.handler = env, bus, handler
        self.limiter = LogLimiter(env.clock)
        self._ssl_server, self._ssl_client = ssl_server, ssl_client
        self._state: _State = "new"
        self._server: Listener | None = None
        self._address: str | None = None
        self._tasks = TaskSet(f"transport {node_name}")
        self._registry = ConnectionRegistry(node_name)
        self._handshaking: set[TcpConnection] = set()
        self._peer_at: dict[str, str] = {}  # dialled address -> peer name
        self._dials: dict[str, asyncio.Future[TcpConnection]] = {}
        self._closed = asyncio.Event()
        self._dial_attempts = self._accepted = self._handshake_failures = 0
        self._auth_failures = self._protocol_errors = 0

    @property
    def address(self) -> str | None:
        """The bound ``host:port`` once started."""
        return self._address

    async def start(self, listen: str) -> str:
        """Listen on ``listen`` (``host:port``, port 0 picks a free one).

        Returns:
            The bound address, e.g. ``"127.0.0.1:53211"``.

        Raises:
            phx.ConfigError: the address is malformed or cannot be bound.
            RuntimeError: already started or closed.
        """
        if self._state != "new" or self._server is not None:
            raise RuntimeError(f"{self!r} cannot start: it is {self._state}")
        host, port = parse_address(listen)
        try:
            self._server, self._address = await self._listen(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}",
                              key="listen") from exc
        self._state = "running"
        _log.info("node %s listening for peers on %s%s%s", self.node_name, self._address,
                  "" if self.protocol == "tcp" else f" ({self.protocol})",
                  " (TLS)" if self._ssl_server else "")
        return self._address

    async def _listen(self, host: str, port: int) -> tuple[Listener, str]:
        """Start accepting; each new stream pair goes to :meth:`_on_accept`.

        Returns:
            The listener (closed by :meth:`aclose`) and the bound ``host:port``.

        Raises:
            OSError: the address cannot be bound.
        """
        tls_timeout = self.settings.handshake_timeout_s if self._ssl_server else None
        server = await asyncio.start_server(
            self._on_accept, host, port, ssl=self._ssl_server,
            ssl_handshake_timeout=tls_timeout, limit=self.settings.read_chunk_bytes)
        return server, format_address(server.sockets[0].getsockname())

    async def connect(self, address: str) -> TcpConnection:
        """The connection to the node at ``address``: reused, joined, or dialled.

        Concurrent callers for one address share one dial; a caller that is cancelled
        does not cancel the dial for the others.

        Raises:
            phx.AuthenticationError: the peer does not know our secret (or its TLS
                certificate was rejected).
            phx.ProtocolError: the peer misbehaved during the handshake.
            ConnectionBroken: unreachable, refused, or hung up (``definite=True``).
            phx.NodeClosed: this transport is closing or closed.
        """
        if self._state in ("closing", "closed"):
            raise NodeClosed(f"transport of {self.node_name} is {self._state}")
        peer = self._peer_at.get(address)
        conn = self._registry.primary.get(peer) if peer is not None else None
        if conn is not None and conn.is_open:
            return conn
        fut = self._dials.get(address)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)
            self._dials[address] = fut
            self._tasks.spawn(self._dial(address, fut), name=f"dial {address}")
        return await asyncio.shield(fut)

    async def _dial(self, address: str, fut: asyncio.Future[TcpConnection]) -> None:
        try:
            conn = await self._open(address)
        except asyncio.CancelledError:
            if not fut.done():  # the transport is closing: callers learn why, not a cancel
                fut.set_exception(NodeClosed(f"transport of {self.node_name} closed during"
                                             f" the dial to {address}"))
            raise
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(conn)
        finally:
            if self._dials.get(address) is fut:
                del self._dials[address]

    async def _open(self, address: str) -> TcpConnection:
        self._dial_attempts += 1
        reader, writer = await self._open_stream(address)
        conn = TcpConnection(self, reader, writer, outbound=True, address=address)
        await self._authenticate(conn)
        if self._state in ("closing", "closed"):
            conn.close("shutdown")
            raise NodeClosed(f"transport of {self.node_name} closed during the dial")
        self._peer_at[address] = conn.peer_name
        return self._registry.register(conn)

    async def _open_stream(
        self, address: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the byte stream a dial runs over, bounded by ``connect_timeout_s``.

        Raises:
            ConnectionBroken: unreachable, refused or timed out (``definite=True``).
            phx.AuthenticationError: the peer's TLS certificate was rejected.
        """
        host, port = parse_address(address)
        s = self.settings
        try:
            async with fail_after(self.env.clock, s.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._ssl_client, limit=s.read_chunk_bytes,
                    local_addr=source_address(self._address, host),
                    server_hostname=host if self._ssl_client else None,
                    ssl_handshake_timeout=s.handshake_timeout_s if self._ssl_client else None)
        except TimeoutError:
            raise ConnectionBroken(
                f"cannot connect to {address}: no answer within {s.connect_timeout_s}s",
                peer=address, definite=True) from None
        except ssl.SSLCertVerificationError as exc:
            self._auth_failures += 1
            raise AuthenticationError(f"TLS certificate of {address} rejected:"
                                      f" {exc.verify_message}") from exc
        except OSError as exc:
            raise ConnectionBroken(f"cannot connect to {address}: {exc.strerror or exc!r}",
                                   peer=address, definite=True) from exc
        return reader, writer

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state != "running":
            writer.transport.abort()
            return
        self._accepted += 1
        address = format_address(writer.get_extra_info("peername"))
        self._tasks.spawn(self._serve(reader, writer, address), name=f"accept {address}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     address: str) -> None:
        conn = TcpConnection(self, reader, writer, outbound=False, address=address)
        try:
            await self._authenticate(conn)
        except HandshakeTimeout as exc:
            self.limiter.warning(_log, "handshake", "dropping connection from %s: %s",
                                 address, exc.message)
        except ConnectionBroken as exc:
            _log.debug("connection from %s ended during the handshake: %s", address, exc)
        except AuthenticationError as exc:
            self.limiter.warning(_log, "auth", "refused connection from %s: %s",
                                 address, exc.message)
        except PhoenixError as exc:
            self.limiter.warning(_log, "protocol", "closing connection from %s during the"
                                 " handshake: %s", address, exc.message)
        else:
            if self._state != "running":
                conn.close("shutdown")
            else:
                self._registry.register(conn)

    async def _authenticate(self, conn: TcpConnection) -> None:
        self._handshaking.add(conn)
        try:
            await conn.handshake()
        except PhoenixError as exc:
            self._handshake_failures += 1
            if isinstance(exc, AuthenticationError):
                self._auth_failures += 1
            elif not isinstance(exc, ConnectionBroken):
                self._protocol_errors += 1
            raise
        finally:
            self._handshaking.discard(conn)

    # --- what connections call (the registry decides) ---------------------------------

    def peer_retired(self, conn: TcpConnection) -> None:
        """The peer sent Goodbye("duplicate") on ``conn``: it uses another connection."""
        self._registry.peer_retired(conn)

    def successor(self, conn: TcpConnection) -> TcpConnection | None:
        return self._registry.successor(conn)

    def connection_closed(self, conn: TcpConnection) -> None:
        self._registry.closed(conn)

    def note_protocol_error(self) -> None:
        self._protocol_errors += 1

    def connections(self) -> list[TcpConnection]:
        """Every established connection, including ones retiring or closing."""
        return list(self._registry.conns)

    # --- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Goodbye to every peer, close every connection, stop listening. Idempotent.

        Pending requests fail with ``ConnectionClosed``; connections that do not finish
        closing within ``3 * close_timeout_s`` are aborted.
        """
        if self._state == "closed":
            return
        if self._state == "closing":
            await self._closed.wait()
            return
        self._state = "closing"
        if self._server is not None:
            self._server.close()
        conns = list(self._registry.conns)
        for conn in conns:
            conn.close("shutdown")
        self._tasks.cancel()  # dials and handshakes in progress
        try:
            # Flush, TLS shutdown and handler cancellation are each bounded by it.
            async with fail_after(self.env.clock, 3 * self.settings.close_timeout_s):
                for conn in conns:
                    await conn.wait_closed()
        except TimeoutError:
            for conn in conns:
                conn.abort()
        await self._tasks.wait()
        if self._server is not None:
            await self._server.wait_closed()
        self._state = "closed"
        self._closed.set()
        _log.info("node %s transport closed", self.node_name)

    async def __aenter__(self) -> TcpTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            node=self.node_name, address=self._address, state=self._state,
            connections=len(self._registry.conns),
            peers=sum(1 for c in self._registry.primary.values() if c.is_open),
            handshaking=len(self._handshaking), dial_attempts=self._dial_attempts,
            accepted=self._accepted, handshake_failures=self._handshake_failures,
            auth_failures=self._auth_failures, protocol_errors=self._protocol_errors,
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.node_name}@{self._address or '-'} [{self._state},"
            f" {len(self._registry.conns)} connections, {len(self._dials)} dialling,"
            f" {len(self._handshaking)} handshaking]>"
        )


def _retrieve(fut: asyncio.Future[TcpConnection]) -> None:
    # A dial whose every caller was cancelled must not log "exception never retrieved".
    if not fut.cancelled():
        fut.exception()


if TYPE_CHECKING:  # mypy proves the seam is honoured: TcpTransport is a Transport

    def _is_transport(t: TcpTransport) -> Transport:
        return t
