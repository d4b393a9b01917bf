"""Per-peer reachability: fail fast while a peer is down, reconnect with jittered backoff.

:class:`PeerManager` sits between the layers that want "a connection to that address"
(agents, membership) and a :class:`~.base.Transport`. Each address gets a
:class:`~phoenix_cluster._resilience.breaker.CircuitBreaker`: after ``failure_threshold``
failed dials in a row it opens, and :meth:`PeerManager.connection` raises
``NodeUnavailable(definite=True)`` at once instead of making every caller wait out a
connect timeout; after ``cooldown_s`` one probe dial is let through. Addresses passed to
:meth:`PeerManager.watch` (the static seeds today, members from membership later) are
also kept connected by a background loop that redials after a loss with
:class:`~phoenix_cluster._resilience.backoff.Backoff` delays drawn from ``env.random``.

The seam for membership: it calls ``watch``/``unwatch`` as members come and go, and
everybody asks ``connection(address)``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster._resilience.breaker import BreakerStatistics, CircuitBreaker
from phoenix_cluster.errors import AuthenticationError, NodeClosed, NodeUnavailable, PhoenixError

from .base import PeerConnection, Transport
from .tasks import TaskSet

__all__ = ["PeerManager", "PeerStatistics"]

_log = logging.getLogger("phoenix_cluster.transport")


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """One address as the peer manager sees it.

    Attributes:
        peer_name: the node last reached there ("" if never).
        connected: a usable connection exists now.
        watched: a background loop keeps it connected.
        connects: successful dials (or reuses) through the manager.
        last_error: why the last attempt failed ("" after a success).
    """

    address: str
    peer_name: str
    connected: bool
    watched: bool
    connects: int
    last_error: str
    breaker: BreakerStatistics


@dataclass(eq=False, slots=True)
class _Peer:
    address: str
    breaker: CircuitBreaker
    conn: PeerConnection | None = None
    watcher: asyncio.Task[None] | None = None
    connects: int = 0
    last_error: str = ""


class PeerManager:
    """Connections by address with circuit breakers and background reconnects.

    Args:
        transport: dials and owns the connections.
        env: ``env.clock`` for breaker time and backoff sleeps, ``env.random`` for jitter.
        backoff: delays between background reconnect attempts.
        failure_threshold: consecutive failed dials that open a peer's breaker.
        cooldown_s: time a breaker stays open before one probe dial.
    """

    def __init__(self, transport: Transport, *, env: Env, backoff: Backoff | None = None,
                 failure_threshold: int = 5, cooldown_s: float = 5.0) -> None:
        self._transport = transport
        self._env = env
        self._backoff = backoff if backoff is not None else Backoff()
        self._failure_threshold = failure_threshold
        self._cooldown_s = cooldown_s
        CircuitBreaker(failure_threshold, cooldown_s)  # validate the settings now
        self._peers: dict[str, _Peer] = {}
        self._tasks = TaskSet(f"peers of {transport.node_name}")
        self._closed = False

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            breaker = CircuitBreaker(self._failure_threshold, self._cooldown_s, name=address)
            peer = self._peers[address] = _Peer(address, breaker)
        return peer

    def open_connection(self, address: str) -> PeerConnection | None:
        """The live connection to ``address`` if there is one (never dials)."""
        peer = self._peers.get(address)
        conn = None if peer is None or self._closed else peer.conn
        return conn if conn is not None and conn.is_open else None

    async def connection(self, address: str) -> PeerConnection:
        """A live connection to ``address``, dialling if needed.

        Raises:
            phx.NodeUnavailable: ``definite=True``: the breaker is open (raised at once,
                with the time until the next probe) or the dial failed.
            phx.AuthenticationError: the peer does not share our secret (counted as a
                failure too: retrying will not help until the configuration changes).
            phx.NodeClosed: the manager or the transport is closed.
        """
        if self._closed:
            raise NodeClosed(f"peer manager of {self._transport.node_name} is closed")
        clock = self._env.clock
        peer = self._peer(address)
        conn = peer.conn
        if conn is not None and conn.is_open:
            return conn
        breaker = peer.breaker
        if not breaker.allow(clock.monotonic()):
            now = clock.monotonic()
            raise NodeUnavailable(
                f"{address} is unreachable: circuit open after"
                f" {breaker.statistics(now).consecutive_failures} consecutive failures"
                f" ({peer.last_error or 'probe in progress'}); next attempt in"
                f" {breaker.retry_after(now):.1f}s",
                definite=True,
            )
        try:
            conn = await self._transport.connect(address)
        except NodeClosed:
            breaker.abandon()
            raise
        except PhoenixError as exc:
            breaker.record_failure(clock.monotonic())
            peer.last_error = exc.message
            if isinstance(exc, AuthenticationError):
                raise
            raise NodeUnavailable(f"cannot reach {address}: {exc.message}",
                                  definite=True) from exc
        except BaseException:
            breaker.abandon()  # cancelled: we learned nothing about the peer
            raise
        breaker.record_success(clock.monotonic())
        peer.conn, peer.last_error = conn, ""
        peer.connects += 1
        return conn

    def watch(self, address: str) -> None:
        """Keep a connection to ``address`` open, redialling after every loss."""
        if self._closed:
            raise NodeClosed(f"peer manager of {self._transport.node_name} is closed")
        peer = self._peer(address)
        if peer.watcher is None or peer.watcher.done():
            peer.watcher = self._tasks.spawn(self._keep_connected(peer), name=f"watch {address}")

    def unwatch(self, address: str) -> None:
        """Stop redialling ``address`` (an open connection stays open)."""
        peer = self._peers.get(address)
        if peer is not None and peer.watcher is not None:
            peer.watcher.cancel()
            peer.watcher = None

    async def _keep_connected(self, peer: _Peer) -> None:
        clock, rng = self._env.clock, self._env.random
        attempt = 0
        while not self._closed:
            wait = peer.breaker.retry_after(clock.monotonic())
            if wait > 0:
                await clock.sleep(wait)
                continue
            try:
                conn = await self.connection(peer.address)
            except NodeClosed:
                return
            except PhoenixError as exc:
                delay = self._backoff.delay(attempt, rng)
                attempt += 1
                _log.debug("reconnect to %s failed (%s); retry %d in %.2fs",
                           peer.address, exc.message, attempt, delay)
                await clock.sleep(delay)
                continue
            attempt = 0
            await conn.wait_closed()
            _log.info("connection to %s (%s) lost; reconnecting", conn.peer_name, peer.address)

    def reset(self, address: str, *, redial: bool = False) -> None:
        """A new incarnation answers at ``address``: forget the old one's failures, so
        its tripped breaker does not keep callers away from the restarted node.

        ``redial``: also close the current connection (its pending requests fail at
        once, to be resent), so the next request dials afresh. For a peer back after it
        was declared dead: a TCP connection that lost packets for seconds waits out its
        retransmission backoff (it doubles, to many seconds) before it carries
        anything again, while a new one works at once."""
        peer = self._peers.get(address)
        if peer is not None:
            peer.breaker.record_success(self._env.clock.monotonic())
            if redial and peer.conn is not None:
                peer.conn.close()
                peer.conn = None

    def breaker(self, address: str) -> CircuitBreaker:
        """The breaker guarding ``address`` (created on first use)."""
        return self._peer(address).breaker

    def statistics(self) -> list[PeerStatistics]:
        """One row per address ever asked for, in first-use order."""
        now = self._env.clock.monotonic()
        return [
            PeerStatistics(
                address=p.address,
                peer_name=p.conn.peer_name if p.conn is not None else "",
                connected=p.conn is not None and p.conn.is_open,
                watched=p.watcher is not None and not p.watcher.done(),
                connects=p.connects,
                last_error=p.last_error,
                breaker=p.breaker.statistics(now),
            )
            for p in self._peers.values()
        ]

    async def aclose(self) -> None:
        """Stop every reconnect loop. Connections belong to the transport and stay open."""
        self._closed = True
        await self._tasks.aclose()

    def __repr__(self) -> str:
        up = sum(1 for p in self._peers.values() if p.conn is not None and p.conn.is_open)
        return f"<PeerManager {self._transport.node_name} [{up}/{len(self._peers)} peers up]>"
