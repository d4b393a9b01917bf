"""The QUIC transport: the TCP transport's frame stream inside one QUIC stream (aioquic).

For lossy or mobile links, or where UDP is allowed and TCP is not, :class:`QuicTransport`
carries exactly the bytes a TCP connection would (the cluster-secret handshake, then
length-prefixed msgpack frames) in the first client-initiated bidirectional stream of a
QUIC connection. :class:`~.streams.StreamPipe` presents that stream as an asyncio
transport, so everything above the bytes is :class:`~.tcp.TcpTransport`'s, unchanged.

**TLS.** QUIC always runs TLS 1.3. Nodes authenticate each other with the cluster-secret
handshake, as over TCP, so no certificate authority is needed: without TLS settings a
node makes an ephemeral self-signed certificate when it starts and dialling nodes do not
verify it. That protects against passive eavesdroppers; against an active man in the
middle it is what plain TCP gives (DESIGN principle 5, ``docs/design/wire.md``). With
``--tls-cert/--tls-key`` (and ``--tls-ca``), as for TCP, a node presents that certificate
and verifies its peers' (against ``tls_ca``, else the system CAs), for TLS-grade
protection. aioquic does not request client certificates, so TLS over QUIC is one-way;
the secret handshake authenticates the client either way.

**Flow control.** aioquic grants the peer more credit as data arrives, whether or not the
application reads it. The connection here replaces that rule for the Phoenix stream with a
sliding window of :data:`STREAM_WINDOW_BYTES` past what was received *while reading*, and
grants nothing while the reader is paused, so a stalled receiver stops its sender within
one window, as TCP's receive window would.

**Bad input** closes only that connection: a second stream, a server-initiated stream, or
no stream within ``handshake_timeout_s`` of the first packet.

Needs the ``aioquic`` package (``pip install 'phoenix-cluster[quic]'``). QUIC's own timers
(loss recovery, idle timeout) run on the event loop's clock; every Phoenix timeout (dial,
handshake, keepalive, close) runs on ``env.clock`` as for TCP.

One connection's QUIC is :class:`~.quic_carrier.QuicCarrier`; this module configures
TLS, listens, dials and keeps the carriers.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import AuthenticationError, ConfigError

from .base import InboundHandler, Transport
from .quic_carrier import STREAM_WINDOW_BYTES, CarrierOwner, PhxQuicConnection, QuicCarrier
from .streams import dialling
from .tasks import TaskSet
from .tcp import TcpTransport, format_address, parse_address, source_address

__all__ = ["ALPN", "STREAM_WINDOW_BYTES", "QuicTransport", "ephemeral_certificate"]

_log = logging.getLogger("phoenix_cluster.transport")

ALPN = "phoenix/1"
"""The TLS application protocol both sides must offer: a stray QUIC client (HTTP/3, say)
fails the TLS handshake instead of reaching the cluster handshake."""

DATAGRAM_BYTES = 1350
"""Default largest UDP payload sent: fits the usual 1500-byte MTU with IPv6 and tunnel
headers to spare. Loopback and jumbo-frame networks can raise it (``max_datagram_bytes``)."""


def ephemeral_certificate(
    name: str,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed P-256 certificate for ``name``, for a node given no ``tls_cert``.

    Never verified by peers (they authenticate with the cluster secret), so its validity
    only has to cover the life of the process.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "phoenix")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert, key


class _Server(QuicServer):
    """aioquic's server, telling us when its socket is really closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.socket_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.socket_closed.done():
            self.socket_closed.set_result(None)


class _Listener:
    def __init__(self, transport: QuicTransport, udp: asyncio.BaseTransport,
                 server: _Server) -> None:
        self._transport, self._udp, self._server = transport, udp, server

    def close(self) -> None:
        # Keep the socket: accepted connections still flush their Goodbye over it.
        for carrier in self._transport.carriers():
            if not carrier.client and not carrier.has_stream:
                carrier.abort()

    async def wait_closed(self) -> None:
        for carrier in self._transport.carriers():
            if not carrier.client:
                carrier.abort()
        self._server.close()  # CONNECTION_CLOSE to any left, then the socket
        await self._server.socket_closed


class QuicTransport(TcpTransport):
    """Authenticated, multiplexed connections over QUIC (UDP, TLS 1.3).

    Takes the same arguments as :class:`~.tcp.TcpTransport` except the TLS ones, plus:

    Args:
        tls_cert: PEM certificate (chain) this node presents; ``None`` makes an
            ephemeral self-signed one at start.
        tls_key: PEM private key for ``tls_cert`` (omit if the key is in that file).
        tls_ca: PEM CA bundle dialled peers' certificates must chain to (and name the
            dialled host). With ``tls_cert`` but no ``tls_ca``, the system CAs; with
            neither, no certificate check: the cluster-secret handshake alone
            authenticates the peer.
        max_datagram_bytes: largest UDP payload sent (:data:`DATAGRAM_BYTES`).

    Raises:
        phx.ConfigError: a setting is out of range, or a certificate file is unusable.
    """

    protocol = "quic"

    def __init__(self, node_name: str, incarnation: int, secret: bytes, *, env: Env,
                 bus: TelemetryBus, max_frame_bytes: int, handler: InboundHandler,
                 role: str = "member", tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, tls_ca: str | Path | None = None,
                 max_datagram_bytes: int = DATAGRAM_BYTES, send_queue_frames: int = 10_000,
                 **options: float) -> None:
        super().__init__(node_name, incarnation, secret, env=env, bus=bus,
                         max_frame_bytes=max_frame_bytes, handler=handler, role=role,
                         ssl_server=None, ssl_client=None,
                         send_queue_frames=send_queue_frames, **options)
        if not 1200 <= max_datagram_bytes <= 65_527:
            raise ConfigError(f"max_datagram_bytes must be in 1200..65527, got"
                              f" {max_datagram_bytes!r}", key="max_datagram_bytes")
        if tls_key is not None and tls_cert is None:
            raise ConfigError("tls_key needs tls_cert", key="tls_cert")
        self._tls_cert, self._tls_key, self._tls_ca = tls_cert, tls_key, tls_ca
        self._datagram_bytes = max_datagram_bytes
        self._carriers: set[QuicCarrier] = set()
        self._teardowns = TaskSet(f"quic teardown {node_name}")

    def _config(self, *, client: bool, host: str = "") -> QuicConfiguration:
        s = self.settings
        config = QuicConfiguration(
            is_client=client, alpn_protocols=[ALPN],
            # QUIC's idle timer backs up our keepalive; it must never fire first.
            idle_timeout=max(2 * s.keepalive_timeout_s, s.connect_timeout_s),
            max_datagram_size=self._datagram_bytes,
            max_data=4 * STREAM_WINDOW_BYTES, max_stream_data=STREAM_WINDOW_BYTES,
        )
        if client:
            config.server_name = host
            if self._tls_ca is None and self._tls_cert is None:
                config.verify_mode = ssl.CERT_NONE  # ephemeral certificates all round
            else:  # TLS configured: verify, as the TCP transport does
                config.verify_mode = ssl.CERT_REQUIRED
                if self._tls_ca is not None:
                    config.load_verify_locations(cafile=str(self._tls_ca))
        elif self._tls_cert is not None:
            try:
                config.load_cert_chain(self._tls_cert, self._tls_key)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load the QUIC certificate {self._tls_cert}: {exc}",
                                  key="tls_cert") from exc
        else:
            config.certificate, config.private_key = ephemeral_certificate(self.node_name)
        return config

    async def _listen(self, host: str, port: int) -> tuple[_Listener, str]:
        config = self._config(client=False)
        factory = functools.partial(QuicCarrier, owner=self, client=False)
        udp, server = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Server(configuration=config, create_protocol=factory),
            local_addr=(host, port))
        return _Listener(self, udp, server), format_address(udp.get_extra_info("sockname"))

    async def _open_stream(
        self, address: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        carrier: QuicCarrier | None = None
        try:
            async with dialling(address, clock=self.env.clock,
                                timeout_s=self.settings.connect_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                addr = cast(tuple[str, int], infos[0][4])
                quic = PhxQuicConnection(configuration=self._config(client=True, host=host))
                _, carrier = await loop.create_datagram_endpoint(
                    lambda: QuicCarrier(quic, owner=self, client=True), remote_addr=addr,
                    local_addr=source_address(self._address, host))
                carrier.peer_addr = tuple(addr)
                carrier.connect(addr)
                await asyncio.shield(carrier.ready)
        except AuthenticationError:
            self._auth_failures += 1
            if carrier is not None:
                carrier.abort()
            raise
        except BaseException:
            if carrier is not None:
                carrier.abort()
            raise
        return carrier.open_stream()

    # --- what carriers call -----------------------------------------------------------

    def accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._on_accept(reader, writer)

    def carrier_bad_input(self, carrier: QuicCarrier, why: str, *, timeout: bool = False
                          ) -> None:
        if timeout:
            self._handshake_failures += 1
        else:
            self.note_protocol_error()
        self.limiter.warning(_log, "protocol", "closing QUIC connection %s %s: %s",
                             "to" if carrier.client else "from", carrier.peer, why)

    def carrier_opened(self, carrier: QuicCarrier) -> None:
        self._carriers.add(carrier)

    def carrier_closed(self, carrier: QuicCarrier) -> None:
        self._carriers.discard(carrier)

    def spawn_teardown(self, carrier: QuicCarrier) -> None:
        self._teardowns.spawn(carrier.drop(), name=f"quic close {carrier.peer}")

    def carriers(self) -> list[QuicCarrier]:
        return list(self._carriers)

    async def aclose(self) -> None:
        await super().aclose()
        for carrier in self.carriers():
            carrier.abort()
        await self._teardowns.wait()


if TYPE_CHECKING:  # mypy proves the seams are honoured

    def _is_transport(t: QuicTransport) -> Transport:
        return t

    def _is_owner(t: QuicTransport) -> CarrierOwner:
        return t
