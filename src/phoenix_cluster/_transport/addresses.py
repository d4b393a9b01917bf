"""Peer addresses: ``host:port`` text to socket addresses and back, and where a dial leaves from.

Every transport, membership's gossip and the settings name a node by its ``host:port``
(``[v6]:port`` for IPv6). :func:`parse_address` reads one (a ``ConfigError`` for a bad
one), :func:`format_address` writes a socket address as one, and
:func:`source_address` picks the local address a dial leaves from, so that a node bound
to one address of a host is seen by its peers at that address.
"""

from __future__ import annotations

import ipaddress

from phoenix_cluster.errors import ConfigError

__all__ = ["format_address", "parse_address", "source_address"]


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` to ``(host, port)``.

    Raises:
        phx.ConfigError: the address has no valid port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {address!r}", key="address")
    return host.removeprefix("[").removesuffix("]"), int(port)


def format_address(sockname: object) -> str:
    """A socket address (IPv4 or IPv6 tuple) as ``host:port`` / ``[host]:port``."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(sockname)


def source_address(listen: str | None, peer_host: str) -> tuple[str, int] | None:
    """The local address a dial to ``peer_host`` leaves from: our listen IP, port 0.

    A node bound to one address of a multi-homed host (or to its own 127.0.0.x in a
    ``LocalCluster``) dials from that address too, so peers and firewalls see one
    address per node. ``None`` (the OS chooses) when we listen on a wildcard or a
    name, when the families differ, or when a loopback listener dials a peer that is
    not on loopback.
    """
    if listen is None:
        return None
    try:
        ours = ipaddress.ip_address(parse_address(listen)[0])
    except ValueError:
        return None
    if ours.is_unspecified:
        return None
    try:
        theirs = ipaddress.ip_address(peer_host)
    except ValueError:  # a name: only a loopback listener needs to know where it points
        return None if ours.is_loopback and peer_host != "localhost" else (str(ours), 0)
    if theirs.version != ours.version or (ours.is_loopback and not theirs.is_loopback):
        return None
    return str(ours), 0
