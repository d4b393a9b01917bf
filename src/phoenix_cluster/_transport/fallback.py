"""A per-peer chain of transports: use the first protocol that works, come back when it heals.

:class:`FallbackTransport` owns one transport per protocol in its chain (by default
``("tcp", "http2", "quic")``), listens on all of them, and for each peer keeps the protocol
it currently uses. Higher layers ask :meth:`FallbackTransport.connection` for a peer's
connection, exactly as they ask :class:`~.peers.PeerManager`, and never see which protocol
carries it.

- **Addresses.** A peer is known by its TCP ``host:port``; :func:`protocol_address`
  derives where it listens for the other protocols (HTTP/2 on TCP port + 1, QUIC on UDP port + 1,
  same port as TCP), unless overridden per peer.
- **Falling forward.** Each (peer, protocol) has its own circuit breaker. A dial tries the
  protocol in use first, then the following ones, then the preferred ones, skipping any
  whose breaker is open. A dial that fails, an open breaker, or a connection that broke
  and cannot be redialled moves the peer to the next protocol that works.
- **Coming back.** While a peer is on anything but its first choice, a background probe
  (jittered backoff on ``env.clock``, gated by the breakers) dials the better protocols
  and switches back as soon as one answers. The connection left behind stays open as a
  warm standby (bounded: one per protocol and peer; keepalive closes it if it dies).
- **Observability.** Every switch emits ``TRANSPORT_PROTOCOL_SWITCHED`` with metadata
  ``node``, ``peer`` (name), ``address`` (TCP address), ``from``, ``to``, ``reason``
  and logs one INFO line. :meth:`FallbackTransport.statistics` shows each peer's
  protocol.

A wrong cluster secret is not a transport failure: ``AuthenticationError`` is raised at
once, without trying the other protocols (they share the secret).

The chain itself (protocol names, the address convention, one transport per protocol)
is :mod:`.chain`; this module keeps each peer on the protocol that works.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster._resilience.breaker import CircuitBreaker
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import (
    AuthenticationError,
    ConfigError,
    NodeClosed,
    NodeUnavailable,
    PhoenixError,
)

from .base import InboundHandler, PeerConnection, TransportStatistics
from .chain import (
    DEFAULT_CHAIN,
    PROTOCOLS,
    Overrides,
    ProtocolName,
    free_port,
    open_transports,
    parse_chain,
    protocol_address,
)
from .chain_peer import ChainPeer, PeerProtocolStatistics
from .tasks import TaskSet
from .tcp import format_address, parse_address

__all__ = [
    "DEFAULT_CHAIN",
    "PROTOCOLS",
    "FallbackStatistics",
    "FallbackTransport",
    "PeerProtocolStatistics",
    "ProtocolName",
    "parse_chain",
    "protocol_address",
]

_log = logging.getLogger("phoenix_cluster.transport")

@dataclass(frozen=True, slots=True)
class FallbackStatistics:
    """A snapshot of a :class:`FallbackTransport`.

    Attributes:
        addresses: where this node listens, per protocol.
        switches: protocol changes across all peers.
        peers: one row per peer address ever asked for, in first-use order.
        transports: each protocol's own transport statistics.
    """

    node: str
    state: str
    chain: tuple[ProtocolName, ...]
    addresses: Mapping[str, str]
    switches: int
    peers: tuple[PeerProtocolStatistics, ...]
    transports: Mapping[str, TransportStatistics]

    def protocols(self) -> dict[str, ProtocolName]:
        """The protocol in use per peer address."""
        return {p.address: p.protocol for p in self.peers}


class FallbackTransport:
    """Connections to peers over a per-peer chain of protocols (TCP, HTTP/2, QUIC).

    Args:
        node_name, incarnation, secret, env, bus, max_frame_bytes, handler, role: as for
            :class:`~.tcp.TcpTransport`; every protocol's transport shares them.
        chain: protocols in order of preference, e.g. ``("tcp", "http2", "quic")`` or
            ``"tcp,quic"``. The node listens on each; each needs its package (``h2``
            for http2, ``aioquic`` for quic).
        peer_chains: per-peer chains (by TCP address), each a subset of ``chain``.
        addresses: per-peer address overrides, ``{tcp_address: {"http2": "h:p"}}``;
            see :func:`protocol_address`.
        ssl_server, ssl_client: TLS for TCP and HTTP/2 (as for ``TcpTransport``).
        tls_cert, tls_key, tls_ca: certificates for QUIC (see ``QuicTransport``).
        failure_threshold: consecutive failed dials that open a (peer, protocol) breaker.
            Low, because another protocol is standing by.
        cooldown_s: how long an open breaker refuses before letting one probe through.
        probe_backoff: delays between background probes of a better protocol.
        **options: any other :class:`~.settings.TcpSettings` field, for every protocol.

    Raises:
        phx.ConfigError: a bad chain or setting, or a protocol's package is missing.
    """

    def __init__(self, node_name: str, incarnation: int, secret: bytes, *, env: Env,
                 bus: TelemetryBus, max_frame_bytes: int, handler: InboundHandler,
                 role: str = "member", chain: str | Sequence[str] = DEFAULT_CHAIN,
                 peer_chains: Mapping[str, str | Sequence[str]] | None = None,
                 addresses: Overrides | None = None,
                 ssl_server: ssl.SSLContext | None = None,
                 ssl_client: ssl.SSLContext | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 tls_ca: str | Path | None = None, failure_threshold: int = 3,
                 cooldown_s: float = 5.0, probe_backoff: Backoff | None = None,
                 **options: Any) -> None:
        self.node_name = node_name
        self.chain = parse_chain(chain)
        self._peer_chains = {a: parse_chain(c) for a, c in (peer_chains or {}).items()}
        for address, pc in self._peer_chains.items():
            missing = set(pc) - set(self.chain)
            if missing:
                raise ConfigError(f"chain for {address} names {sorted(missing)}, which this"
                                  f" node does not run (chain {','.join(self.chain)})",
                                  key="peer_chains")
        self._overrides: dict[str, dict[str, str]] = {a: dict(m) for a, m in
                                                      (addresses or {}).items()}
        self._env, self._bus = env, bus
        CircuitBreaker(failure_threshold, cooldown_s)  # validate now
        self._failure_threshold, self._cooldown_s = failure_threshold, cooldown_s
        self._probe_backoff = probe_backoff or Backoff(base_s=1.0, max_s=30.0)
        common: dict[str, Any] = dict(env=env, bus=bus, max_frame_bytes=max_frame_bytes,
                                      handler=handler, role=role, **options)
        self.transports = open_transports(
            self.chain, node_name, incarnation, secret, ssl_server=ssl_server,
            ssl_client=ssl_client, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
            **common)
        self.addresses: dict[str, str] = {}
        self._address: str | None = None
        self._peers: dict[str, ChainPeer] = {}
        self._tasks = TaskSet(f"fallback {node_name}")
        self._state = "new"
        self._switches = 0

    @property
    def address(self) -> str | None:
        """This node's TCP address (the one peers know it by) once started."""
        return self._address

    # --- listening --------------------------------------------------------------------

    async def start(self, listen: str, *, listen_at: Mapping[str, str] | None = None) -> str:
        """Listen on every protocol of the chain at the conventional addresses.

        Args:
            listen: the TCP ``host:port``; port 0 picks a port whose conventional
                partners (TCP and UDP port + 1 for HTTP/2 and QUIC) are free too.
            listen_at: explicit ``host:port`` per protocol, overriding the convention.

        Returns:
            The node's TCP address (whether or not TCP is in the chain), which
            :func:`protocol_address` maps to the others.

        Raises:
            phx.ConfigError: an address is malformed or cannot be bound.
            RuntimeError: already started or closed.
        """
        if self._state != "new":
            raise RuntimeError(f"{self!r} cannot start: it is {self._state}")
        self._state = "starting"
        host, port = parse_address(listen)
        explicit = dict(listen_at or {})
        if port == 0 and any(p not in explicit for p in self.chain):
            port = free_port(host, [p for p in self.chain if p not in explicit])
        base = format_address((host, port))
        try:
            for proto in self.chain:
                want = explicit.get(proto) or protocol_address(base, proto)
                try:
                    self.addresses[proto] = await self.transports[proto].start(want)
                except ConfigError as exc:
                    if proto == "tcp" or proto in explicit:
                        raise
                    raise ConfigError(
                        f"{exc.message} (the {proto} address of {base} by convention; give"
                        f" it explicitly, or leave room: HTTP/2 takes TCP port + 1)",
                        key="listen") from exc
        except BaseException:
            await self.aclose()
            raise
        self._address = self.addresses.get("tcp", base)
        self._state = "running"
        return self._address

    # --- connections ------------------------------------------------------------------

    async def connect(self, address: str) -> PeerConnection:
        """Same as :meth:`connection` (the ``Transport`` spelling)."""
        return await self.connection(address)

    def open_connection(self, address: str) -> PeerConnection | None:
        """The live connection to ``address`` if there is one (never dials)."""
        peer = self._peers.get(address)
        if peer is None or self._state in ("closing", "closed"):
            return None
        conn = peer.conn
        return conn if conn is not None and conn.is_open else None

    async def connection(self, address: str) -> PeerConnection:
        """A live connection to the node whose TCP address is ``address``.

        Reuses the current one; otherwise dials along the peer's chain (the protocol in
        use first), switching protocols as needed.

        Raises:
            phx.NodeUnavailable: ``definite=True``: no protocol of the chain could reach
                the peer (the message lists why, per protocol).
            phx.AuthenticationError: the peer does not share our secret.
            phx.NodeClosed: this transport is closed.
        """
        if self._state in ("closing", "closed"):
            raise NodeClosed(f"transport of {self.node_name} is {self._state}")
        peer = self._peer(address)
        conn = peer.conn
        if conn is not None and conn.is_open:
            return conn
        async with peer.lock:  # concurrent callers share one walk along the chain
            conn = peer.conn
            if conn is not None and conn.is_open:
                return conn
            return await self._dial_chain(peer)

    async def _dial_chain(self, peer: ChainPeer) -> PeerConnection:
        n = len(peer.chain)
        failures: list[str] = []
        for k in range(n):
            i = (peer.current + k) % n
            conn, why = await self._try(peer, i)
            if conn is not None:
                self._use(peer, i, conn, "; ".join(failures) or "connected")
                return conn
            failures.append(why)
        raise NodeUnavailable(f"cannot reach {peer.address} over any of"
                              f" {','.join(peer.chain)}: {'; '.join(failures)}", definite=True)

    async def _try(self, peer: ChainPeer, i: int) -> tuple[PeerConnection | None, str]:
        """Dial ``peer`` over its ``i``-th protocol; ``(None, why)`` if that failed."""
        proto = peer.chain[i]
        breaker = peer.breakers[proto]
        clock = self._env.clock
        now = clock.monotonic()
        if not breaker.allow(now):
            return None, (f"{proto}: circuit open ({peer.errors.get(proto) or 'probing'};"
                          f" next attempt in {breaker.retry_after(now):.1f}s)")
        try:
            target = protocol_address(peer.address, proto, overrides=self._overrides)
            conn = await self.transports[proto].connect(target)
        except NodeClosed:
            breaker.abandon()
            raise
        except AuthenticationError as exc:
            breaker.record_failure(clock.monotonic())
            peer.errors[proto] = exc.message
            raise
        except PhoenixError as exc:
            breaker.record_failure(clock.monotonic())
            peer.errors[proto] = exc.message
            return None, f"{proto}: {exc.message}"
        except BaseException:
            breaker.abandon()  # cancelled: we learned nothing about the peer
            raise
        breaker.record_success(clock.monotonic())
        peer.errors.pop(proto, None)
        return conn, ""

    def _use(self, peer: ChainPeer, i: int, conn: PeerConnection, reason: str) -> None:
        old = peer.protocol
        peer.conn = conn
        if i != peer.current:
            peer.current = i
            peer.switches += 1
            self._switches += 1
            new = peer.protocol
            _log.info("node %s: peer %s (%s) switched from %s to %s: %s", self.node_name,
                      conn.peer_name, peer.address, old, new, reason)
            self._bus.execute(events.TRANSPORT_PROTOCOL_SWITCHED, {"switches": peer.switches},
                              {"node": self.node_name, "peer": conn.peer_name,
                               "address": peer.address, "from": old, "to": new,
                               "reason": reason})
        if peer.current > 0 and (peer.prober is None or peer.prober.done()):
            peer.prober = self._tasks.spawn(self._probe(peer), name=f"probe {peer.address}")

    async def _probe(self, peer: ChainPeer) -> None:
        """While ``peer`` is not on its first choice, try the better ones now and then."""
        clock, rng = self._env.clock, self._env.random
        attempt = 0
        while self._state not in ("closing", "closed") and peer.current > 0:
            await clock.sleep(self._probe_backoff.delay(attempt, rng))
            attempt += 1
            for i in range(peer.current):
                try:
                    conn, _ = await self._try(peer, i)
                except NodeClosed:
                    return
                except AuthenticationError:
                    continue  # logged by the peer; keep using what works
                if conn is not None and i < peer.current:
                    protocol = peer.chain[i]
                    self._use(peer, i, conn, f"{protocol} recovered")
                    attempt = 0
                    break

    def _peer(self, address: str) -> ChainPeer:
        peer = self._peers.get(address)
        if peer is None:
            chain = self._peer_chains.get(address, self.chain)
            breakers: dict[str, CircuitBreaker] = {
                p: CircuitBreaker(self._failure_threshold, self._cooldown_s,
                                  name=f"{address}/{p}") for p in chain}
            peer = self._peers[address] = ChainPeer(address, chain, breakers)
        return peer

    def protocol_of(self, address: str) -> ProtocolName | None:
        """The protocol ``address`` is on (or will be tried first); ``None`` if unknown."""
        peer = self._peers.get(address)
        return peer.protocol if peer is not None else None

    def reset(self, address: str, *, redial: bool = False) -> None:
        """A new incarnation answers at ``address``: close its breakers, so the old one's
        failures do not keep callers away from the restarted node; ``redial``: also
        close the current connection (as :meth:`PeerManager.reset`)."""
        peer = self._peers.get(address)
        if peer is not None:
            peer.reset_breakers(self._env.clock.monotonic())
            if redial and peer.conn is not None:
                peer.conn.close()
                peer.conn = None

    def forget(self, address: str) -> None:
        """Drop what is known about ``address`` and stop probing it (it left the cluster)."""
        peer = self._peers.pop(address, None)
        if peer is not None and peer.prober is not None:
            peer.prober.cancel()

    # --- lifecycle and introspection --------------------------------------------------

    async def aclose(self) -> None:
        """Stop probing, then close every protocol's transport. Idempotent."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        await self._tasks.aclose()
        await asyncio.gather(*(t.aclose() for t in self.transports.values()))
        self._state = "closed"

    async def __aenter__(self) -> FallbackTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> FallbackStatistics:
        now = self._env.clock.monotonic()
        return FallbackStatistics(
            node=self.node_name, state=self._state, chain=self.chain,
            addresses=dict(self.addresses), switches=self._switches,
            peers=tuple(p.statistics(now) for p in self._peers.values()),
            transports={k: t.statistics() for k, t in self.transports.items()},
        )

    def __repr__(self) -> str:
        on = {p.protocol for p in self._peers.values()}
        return (f"<FallbackTransport {self.node_name}@{self._address or '-'} [{self._state},"
                f" chain {','.join(self.chain)}, {len(self._peers)} peers on"
                f" {','.join(sorted(on)) or '-'}]>")
