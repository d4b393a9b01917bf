"""The HTTP/2 transport: the TCP transport's frame stream inside one HTTP/2 stream.

For networks that pass HTTP but not arbitrary TCP (proxies, meshes, firewalls that
inspect the first bytes), :class:`Http2Transport` speaks HTTP/2 with prior knowledge
(``h2c``; over TLS when given ``ssl.SSLContext`` objects, as the TCP transport is):

    client                                              server
      |-- preface, SETTINGS ------------------------------->|
      |-- HEADERS  POST /phoenix/v1  (stream 1, open) ----->|
      |<---------------------------- SETTINGS, HEADERS 200 -|
      |== DATA: the Phoenix frame stream, both ways, for the life of the connection ==|

One long-lived bidirectional stream per connection carries exactly the bytes a TCP
connection would: the cluster-secret handshake, then length-prefixed msgpack frames.
:class:`~.streams.StreamPipe` presents that stream as an asyncio transport, so
:class:`Http2Transport` is :class:`~.tcp.TcpTransport` with two hooks replaced
(listening and dialling) and inherits everything else: authentication, request matching,
write coalescing, bounded queues, keepalive, the simultaneous-dial tie-break, statistics.

HTTP/2 flow control is end-to-end backpressure here: received DATA is acknowledged
(``WINDOW_UPDATE``) only while the reader is reading, so a stalled receiver stops its
sender after one window (:data:`STREAM_WINDOW_BYTES`), as TCP's receive window does.

Bad input closes only that connection: anything that is not HTTP/2 (an HTTP/1.1 request,
garbage), a request for another path (answered ``404``), a second stream (refused), or
no request within ``handshake_timeout_s``. The protocol state machine is the ``h2``
package (sans-I/O); we measured it against hypercorn + httpx, which cannot keep one
request and its response streaming both ways at once (see ``docs/transport.md``).

One connection's HTTP/2 is :class:`~.http2_carrier.H2Carrier`; this module listens,
dials and keeps the carriers.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import AuthenticationError

from .base import InboundHandler, Transport
from .http2_carrier import CONTENT_TYPE, PATH, STREAM_WINDOW_BYTES, CarrierOwner, H2Carrier
from .streams import dialling
from .tasks import fail_after
from .tcp import TcpTransport, format_address, parse_address, source_address

__all__ = ["CONTENT_TYPE", "PATH", "STREAM_WINDOW_BYTES", "Http2Transport"]

_log = logging.getLogger("phoenix_cluster.transport")


class _Listener:
    """The HTTP/2 listening socket plus the carriers it accepted."""

    def __init__(self, transport: Http2Transport, server: asyncio.Server) -> None:
        self._transport = transport
        self._server = server

    def close(self) -> None:
        self._server.close()
        for carrier in self._transport.carriers():
            if not carrier.client and not carrier.has_stream:
                carrier.abort()  # not yet a connection anyone else will close

    async def wait_closed(self) -> None:
        await self._transport.drop_carriers(client=False)
        await self._server.wait_closed()


class Http2Transport(TcpTransport):
    """Authenticated, multiplexed connections over HTTP/2 (h2c, or h2 over TLS).

    Takes the same arguments as :class:`~.tcp.TcpTransport` (``ssl_server`` /
    ``ssl_client`` give HTTP/2 over TLS) and behaves the same; only the bytes on the
    wire differ. Needs the ``h2`` package (``pip install 'phoenix-cluster[http2]'``).
    """

    protocol = "http2"

    def __init__(self, node_name: str, incarnation: int, secret: bytes, *, env: Env,
                 bus: TelemetryBus, max_frame_bytes: int, handler: InboundHandler,
                 role: str = "member", ssl_server: ssl.SSLContext | None = None,
                 ssl_client: ssl.SSLContext | None = None, send_queue_frames: int = 10_000,
                 **options: float) -> None:
        super().__init__(node_name, incarnation, secret, env=env, bus=bus,
                         max_frame_bytes=max_frame_bytes, handler=handler, role=role,
                         ssl_server=ssl_server, ssl_client=ssl_client,
                         send_queue_frames=send_queue_frames, **options)
        self._carriers: set[H2Carrier] = set()

    async def _listen(self, host: str, port: int) -> tuple[_Listener, str]:
        tls: dict[str, Any] = {}
        if self._ssl_server is not None:
            tls = {"ssl": self._ssl_server,
                   "ssl_handshake_timeout": self.settings.handshake_timeout_s}
        server = await asyncio.get_running_loop().create_server(
            lambda: H2Carrier(self, client=False), host, port, **tls)
        return _Listener(self, server), format_address(server.sockets[0].getsockname())

    async def _open_stream(
        self, address: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = parse_address(address)
        s = self.settings
        tls: dict[str, Any] = {}
        if self._ssl_client is not None:
            tls = {"ssl": self._ssl_client, "server_hostname": host,
                   "ssl_handshake_timeout": s.handshake_timeout_s}
        try:
            async with dialling(address, clock=self.env.clock, timeout_s=s.connect_timeout_s):
                _, carrier = await asyncio.get_running_loop().create_connection(
                    lambda: H2Carrier(self, client=True), host, port,
                    local_addr=source_address(self._address, host), **tls)
        except AuthenticationError:
            self._auth_failures += 1
            raise
        return carrier.open_stream(authority=address)

    # --- what carriers call -----------------------------------------------------------

    def accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._on_accept(reader, writer)

    def carrier_bad_input(self, carrier: H2Carrier, why: str, *, timeout: bool = False) -> None:
        if timeout:
            self._handshake_failures += 1
        else:
            self.note_protocol_error()
        self.limiter.warning(_log, "protocol", "closing HTTP/2 connection %s %s: %s",
                             "to" if carrier.client else "from", carrier.peer, why)

    def carrier_opened(self, carrier: H2Carrier) -> None:
        self._carriers.add(carrier)

    def carrier_closed(self, carrier: H2Carrier) -> None:
        self._carriers.discard(carrier)

    def carriers(self) -> list[H2Carrier]:
        return list(self._carriers)

    async def drop_carriers(self, *, client: bool | None = None) -> None:
        """Abort carriers still lingering after their connections closed; wait for them."""
        doomed = [c for c in self._carriers if client is None or c.client == client]
        for carrier in doomed:
            carrier.abort()
        if doomed:
            try:
                async with fail_after(self.env.clock, self.settings.close_timeout_s):
                    await asyncio.wait([c.done for c in doomed])
            except TimeoutError:
                _log.warning("%d HTTP/2 connections did not close in time", len(doomed))

    async def aclose(self) -> None:
        await super().aclose()
        await self.drop_carriers()


if TYPE_CHECKING:  # mypy proves the seams are honoured

    def _is_transport(t: Http2Transport) -> Transport:
        return t

    def _is_owner(t: Http2Transport) -> CarrierOwner:
        return t
