"""DNS discovery: A / AAAA records plus a fixed port, or SRV records that carry the port.

The usual Kubernetes recipe is a headless Service (``clusterIP: None``) with a named port:
its cluster DNS answers ``_PORTNAME._tcp.SERVICE.NAMESPACE.svc.cluster.local`` SRV with
one target per ready pod, and each target's A record in the additional section. That is
libcluster's ``Kubernetes.DNSSRV`` and Akka's ``akka-dns`` discovery.

dnspython's asyncio resolver does the work: the stdlib has no SRV lookup, and
``getaddrinfo`` would block a thread per query and cannot be pointed at a test server.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from phoenix_cluster.errors import ConfigError

from .discovery import DiscoveryError, ProviderBase, join_host_port, unique_sorted

__all__ = ["DnsSeeds"]

RecordKind = Literal["A", "AAAA", "SRV"]


class DnsSeeds(ProviderBase):
    """Seeds from DNS.

    Args:
        name: the name to look up, e.g. ``phoenix.example.local`` (A/AAAA) or
            ``_phoenix._tcp.phoenix.default.svc.cluster.local`` (SRV). Short names use the
            resolver's search list, as in a pod's ``/etc/resolv.conf``.
        port: the peers' port for A/AAAA (required there). For SRV it overrides the
            records' port when given.
        kind: ``"A"``, ``"AAAA"`` or ``"SRV"``.
        nameserver: ``IP`` or ``IP:PORT`` (``[v6]:PORT``) of the server to ask; default
            the system's resolvers from ``/etc/resolv.conf``.
        timeout_s: how long one lookup may take, retries included.

    Raises:
        phx.ConfigError: a bad kind, a missing port for A/AAAA, or a bad nameserver.
    """

    def __init__(
        self,
        name: str,
        port: int | None = None,
        kind: RecordKind | str = "A",
        *,
        nameserver: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        kind = kind.upper()
        if kind not in ("A", "AAAA", "SRV"):
            raise ConfigError(
                f"bad setting discovery: DNS record kind must be A, AAAA or SRV, got {kind!r}",
                key="discovery",
            )
        if port is None and kind != "SRV":
            raise ConfigError(
                f"bad setting discovery: DNS {kind} lookups need a port (NAME:PORT)",
                key="discovery",
            )
        if port is not None and not 0 < port <= 65535:
            raise ConfigError(
                f"bad setting discovery: port must be in 1..65535, got {port}", key="discovery"
            )
        self._name = name
        self._port = port
        self._kind: RecordKind = kind  # type: ignore[assignment]
        self._timeout_s = timeout_s
        self._nameserver = _parse_nameserver(nameserver) if nameserver else None
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self._nameserver is None:
                try:
                    resolver = dns.asyncresolver.Resolver()
                except dns.exception.DNSException as exc:
                    raise DiscoveryError(f"dns: no usable resolver configuration: {exc}") from exc
            else:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [self._nameserver[0]]
                resolver.port = self._nameserver[1]
            resolver.lifetime = self._timeout_s
            resolver.timeout = max(self._timeout_s / 3, 0.2)
            self._resolver = resolver
        return self._resolver

    async def seeds(self) -> list[str]:
        if self._kind == "SRV":
            return await self._srv()
        assert self._port is not None
        return unique_sorted(
            join_host_port(ip, self._port) for ip in await self._lookup(self._name, self._kind)
        )

    async def _query(self, name: str, kind: str) -> dns.resolver.Answer:
        resolver = self._get_resolver()
        try:
            return await resolver.resolve(name, kind, search=True)
        except dns.resolver.NXDOMAIN as exc:
            raise DiscoveryError(f"dns: {name} does not exist (NXDOMAIN)") from exc
        except dns.resolver.NoAnswer as exc:
            raise DiscoveryError(f"dns: {name} has no {kind} records") from exc
        except dns.exception.Timeout as exc:
            raise DiscoveryError(
                f"dns: no answer for {name} {kind} within {self._timeout_s}s"
                f" from {self._where()}"
            ) from exc
        except dns.exception.DNSException as exc:
            raise DiscoveryError(
                f"dns: {name} {kind} lookup failed at {self._where()}: {exc}"
            ) from exc

    async def _lookup(self, name: str, kind: str) -> list[str]:
        answer = await self._query(name, kind)
        return [rdata.address for rdata in answer]

    async def _srv(self) -> list[str]:
        answer = await self._query(self._name, "SRV")
        glue = _glue(answer.response)
        found: list[str] = []
        for rdata in answer:
            target = rdata.target
            if target == dns.name.root:  # "." = "service decidedly not available here"
                continue
            port = self._port or int(rdata.port)
            hosts = glue.get(target)
            if not hosts:
                hosts = await self._resolve_target(target)
            found.extend(join_host_port(h, port) for h in hosts)
        return unique_sorted(found)

    async def _resolve_target(self, target: dns.name.Name) -> list[str]:
        """A target without glue: its A records, else AAAA, else the name itself."""
        for kind in ("A", "AAAA"):
            try:
                return await self._lookup(target.to_text(), kind)
            except DiscoveryError:
                continue
        return [target.to_text(omit_final_dot=True)]

    def _where(self) -> str:
        if self._nameserver is None:
            return "the system resolver"
        return join_host_port(*self._nameserver)

    def __repr__(self) -> str:
        port = f":{self._port}" if self._port else ""
        return f"<DnsSeeds {self._kind} {self._name}{port} via {self._where()}>"


def _glue(response: dns.message.Message | None) -> dict[dns.name.Name, list[str]]:
    """Addresses the server put in the additional section, by owner name."""
    glue: dict[dns.name.Name, list[str]] = {}
    if response is None:
        return glue
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            glue.setdefault(rrset.name, []).extend(r.address for r in rrset)
    return glue


def _parse_nameserver(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a bare IPv4 or IPv6 address
        host, port_text = text, "53"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""
    if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ConfigError(
            f"bad setting discovery: nameserver must be IP[:PORT], got {text!r}", key="discovery"
        )
    return host, int(port_text)
