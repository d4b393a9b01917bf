"""Which protocols a node speaks, where it listens for each, and their transports.

A fallback chain names protocols in order of preference (:func:`parse_chain`); a node
known by its TCP address listens for the others at addresses derived from it by one
convention (:func:`protocol_address`, overridable per peer), for which :func:`free_port`
finds room. :func:`open_transports` builds one transport per protocol of a chain (the
HTTP/2 and QUIC ones only when their packages are installed, else a ``ConfigError``
naming the extra). :class:`~.fallback.FallbackTransport` decides which one a peer uses.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from phoenix_cluster.errors import ConfigError

from .tcp import TcpTransport, format_address, parse_address

if TYPE_CHECKING:
    from .http2 import Http2Transport
    from .quic import QuicTransport

__all__ = [
    "DEFAULT_CHAIN",
    "HTTP2_PORT_OFFSET",
    "PROTOCOLS",
    "Overrides",
    "ProtocolName",
    "free_port",
    "open_transports",
    "parse_chain",
    "protocol_address",
]

ProtocolName = Literal["tcp", "http2", "quic"]

PROTOCOLS: tuple[ProtocolName, ...] = ("tcp", "http2", "quic")
"""Every protocol a chain may name."""

DEFAULT_CHAIN: tuple[ProtocolName, ...] = ("tcp", "http2", "quic")
"""TCP first (fastest, see ``docs/transport.md``), then HTTP/2 (passes HTTP-only
middleboxes), then QUIC (UDP: survives where TCP is blocked or lossy)."""

HTTP2_PORT_OFFSET = 1
"""HTTP/2 listens on the TCP port plus this (a second TCP socket, so port + 1)."""

Overrides = Mapping[str, Mapping[str, str]]
"""Per-peer addresses: ``{tcp_address: {protocol: "host:port"}}``."""


def parse_chain(chain: str | Iterable[str]) -> tuple[ProtocolName, ...]:
    """``"tcp,http2,quic"`` (or a sequence of names) to a validated chain.

    Raises:
        phx.ConfigError: empty, unknown or repeated protocol names.
    """
    names = [n.strip().lower() for n in (chain.split(",") if isinstance(chain, str) else chain)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("the transport chain is empty; name at least one of tcp, http2,"
                          " quic", key="transport_chain")
    out: list[ProtocolName] = []
    for name in names:
        if name not in PROTOCOLS:
            raise ConfigError(f"unknown transport {name!r} in the chain; expected tcp, http2"
                              " or quic", key="transport_chain")
        if name in out:
            raise ConfigError(f"transport {name!r} appears twice in the chain",
                              key="transport_chain")
        out.append(name)
    return tuple(out)


def protocol_address(address: str, protocol: str, *, overrides: Overrides | None = None) -> str:
    """Where the node whose TCP address is ``address`` listens for ``protocol``.

    The convention, so that one address per node is enough to reach it any way:

    ==========  ==============================  =====================
    protocol    address                         example (TCP 7100)
    ==========  ==============================  =====================
    ``tcp``     the TCP address itself          ``10.0.0.7:7100/tcp``
    ``http2``   same host, TCP port + 1         ``10.0.0.7:7101/tcp``
    ``quic``    same host, port + 1, over UDP   ``10.0.0.7:7101/udp``
    ==========  ==============================  =====================

    ``overrides[address][protocol]`` (``host:port``) replaces the convention for one peer
    (a NAT, a proxy, a port that was taken). UDP on the TCP port itself belongs to
    membership gossip (``_membership.messages.gossip_address``).

    Raises:
        phx.ConfigError: ``address`` is malformed, ``protocol`` unknown, or port + 1 is
            not a port.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown transport {protocol!r}", key="transport_chain")
    explicit = (overrides or {}).get(address, {}).get(protocol)
    if explicit is not None:
        parse_address(explicit)  # validate
        return explicit
    host, port = parse_address(address)
    if protocol in ("http2", "quic"):
        if port == 0:
            return address  # "any port" stays "any port"
        port += HTTP2_PORT_OFFSET  # TCP port + 1 for HTTP/2, UDP port + 1 for QUIC
        if port > 65535:
            raise ConfigError(f"{address}: the {protocol} port would be {port}; give an "
                              f"explicit {protocol} address", key="addresses")
    return format_address((host, port))


def open_transports(chain: Sequence[ProtocolName], node_name: str, incarnation: int,
                    secret: bytes, *, ssl_server: ssl.SSLContext | None,
                    ssl_client: ssl.SSLContext | None, tls_cert: str | Path | None,
                    tls_key: str | Path | None, tls_ca: str | Path | None,
                    **common: Any) -> dict[ProtocolName, TcpTransport]:
    """One transport per protocol of ``chain``, each given ``common`` (env, bus, ...).

    Raises:
        phx.ConfigError: a protocol's package is missing (the message names the extra).
    """
    transports: dict[ProtocolName, TcpTransport] = {}
    for proto in chain:
        if proto == "tcp":
            t: TcpTransport = TcpTransport(node_name, incarnation, secret,
                                           ssl_server=ssl_server, ssl_client=ssl_client,
                                           **common)
        elif proto == "http2":
            t = _http2()(node_name, incarnation, secret, ssl_server=ssl_server,
                         ssl_client=ssl_client, **common)
        else:
            t = _quic()(node_name, incarnation, secret, tls_cert=tls_cert,
                        tls_key=tls_key, tls_ca=tls_ca, **common)
        transports[proto] = t
    return transports


def _http2() -> type[Http2Transport]:
    try:
        from .http2 import Http2Transport
    except ImportError as exc:
        raise ConfigError("the http2 transport needs the h2 package: pip install"
                          f" 'phoenix-cluster[http2]' ({exc})", key="transport_chain") from exc
    return Http2Transport


def _quic() -> type[QuicTransport]:
    try:
        from .quic import QuicTransport
    except ImportError as exc:
        raise ConfigError("the quic transport needs the aioquic package: pip install"
                          f" 'phoenix-cluster[quic]' ({exc})", key="transport_chain") from exc
    return QuicTransport


def free_port(host: str, protocols: Sequence[str]) -> int:
    """A TCP port ``p`` with ``p`` (TCP), ``p + 1`` (TCP) and ``p`` (UDP) free as needed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    needs = {(socket.SOCK_STREAM, 0) if p == "tcp" else (socket.SOCK_STREAM, 1) if p == "http2"
             else (socket.SOCK_DGRAM, 0) for p in protocols}
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port + 1 > 65535:
            continue
        try:
            for kind, offset in needs:
                with socket.socket(family, kind) as s:
                    s.bind((host, port + offset))
        except OSError:
            continue
        return port
    raise ConfigError(f"no free port on {host} for {', '.join(protocols)}", key="listen")
