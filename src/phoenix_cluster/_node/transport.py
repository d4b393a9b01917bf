"""The transport a node talks to others through, chosen from its settings.

The cluster secret (from ``cookie`` or ``cookie_file``; only a member may create the
file, since only a member may found a cluster), TLS, then the connections: the test's
in-memory network when one was given, TCP, or a fallback chain (``transports``: QUIC,
HTTP/2, TCP; docs/transport.md). Every inbound frame goes to ``inbound``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._foundation.env import Env
from .._foundation.settings import Settings
from .._telemetry.bus import TelemetryBus
from .._transport.cookie import resolve_secret
from .._transport.fallback import FallbackTransport, parse_chain
from .._transport.memory import MemoryNetwork, MemoryTransport
from .._transport.peers import PeerManager
from .._transport.rpc import Inbound
from .._transport.tcp import TcpTransport
from .._transport.tls import tls_contexts

__all__ = ["OpenedTransport", "open_transport"]

_log = logging.getLogger("phoenix_cluster.node")


@dataclass(frozen=True, slots=True)
class OpenedTransport:
    secret: bytes
    """The cluster secret (never logged)."""
    transport: TcpTransport | FallbackTransport | MemoryTransport
    peers: PeerManager | FallbackTransport
    """Connections to peers, with their circuit breakers (a fallback chain is its own)."""


def open_transport(name: str, incarnation: int, settings: Settings, env: Env,
                   bus: TelemetryBus, inbound: Inbound,
                   network: MemoryNetwork | None) -> OpenedTransport:
    """The transport of a node that talks to others (not started: it binds in ``start``).

    Raises:
        ConfigError: no usable secret, or a TLS or transport setting is wrong.
    """
    s = settings
    # Only a member may found a cluster, so only a member writes a new secret file.
    secret, cookie_path = resolve_secret(s.cookie, s.cookie_file, create=s.role == "member")
    if cookie_path is not None:
        _log.info("node %s uses the cluster secret in %s", name, cookie_path)
    ssl_server, ssl_client = tls_contexts(s.tls_cert, s.tls_key, s.tls_ca,
                                          verify_hostname=s.tls_verify_hostname)
    chain = parse_chain(s.transports)
    if network is not None:
        memory = network.transport(
            name, incarnation, secret, env=env, bus=bus,
            max_frame_bytes=s.max_frame_bytes, handler=inbound, role=s.role)
        return OpenedTransport(secret, memory, PeerManager(memory, env=env))
    if chain == ("tcp",):
        tcp = TcpTransport(
            name, incarnation, secret, env=env, bus=bus,
            max_frame_bytes=s.max_frame_bytes, handler=inbound, role=s.role,
            ssl_server=ssl_server, ssl_client=ssl_client,
            handshake_timeout_s=s.handshake_timeout_s,
        )
        return OpenedTransport(secret, tcp, PeerManager(tcp, env=env))
    fallback = FallbackTransport(
        name, incarnation, secret, env=env, bus=bus,
        max_frame_bytes=s.max_frame_bytes, handler=inbound, role=s.role,
        chain=chain, ssl_server=ssl_server, ssl_client=ssl_client,
        tls_cert=s.tls_cert, tls_key=s.tls_key, tls_ca=s.tls_ca,
        handshake_timeout_s=s.handshake_timeout_s,
    )
    return OpenedTransport(secret, fallback, fallback)
