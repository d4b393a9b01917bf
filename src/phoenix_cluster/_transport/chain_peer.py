"""One peer of a fallback chain: the protocol it is on, its breakers, and its statistics.

:class:`ChainPeer` is what :class:`~.fallback.FallbackTransport` keeps per peer address:
its chain, which protocol of it is in use, a circuit breaker and the latest failure per
protocol, the live connection and the background probe looking for a better protocol.
:class:`PeerProtocolStatistics` is its row in the transport's statistics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from phoenix_cluster._resilience.breaker import BreakerStatistics, CircuitBreaker

from .base import PeerConnection
from .chain import ProtocolName

__all__ = ["ChainPeer", "PeerProtocolStatistics"]


@dataclass(frozen=True, slots=True)
class PeerProtocolStatistics:
    """One peer as the fallback chain sees it.

    Attributes:
        address: the peer's TCP address (its key).
        peer_name: the node last reached there ("" if never).
        protocol: the protocol in use (or to be tried first).
        chain: this peer's chain, in order of preference.
        connected: a usable connection exists now.
        switches: protocol changes so far.
        probing: a background probe is looking for a better protocol.
        last_error: the latest failure per protocol ("" when none).
        breakers: each protocol's circuit breaker.
    """

    address: str
    peer_name: str
    protocol: ProtocolName
    chain: tuple[ProtocolName, ...]
    connected: bool
    switches: int
    probing: bool
    last_error: Mapping[str, str]
    breakers: Mapping[str, BreakerStatistics]


@dataclass(eq=False, slots=True)
class ChainPeer:
    """One peer on its chain: the protocol in use, a breaker and the last error per
    protocol, the connection, and the probe looking for a better protocol."""

    address: str
    chain: tuple[ProtocolName, ...]
    breakers: dict[str, CircuitBreaker]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    current: int = 0
    conn: PeerConnection | None = None
    prober: asyncio.Task[None] | None = None
    switches: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def protocol(self) -> ProtocolName:
        return self.chain[self.current]

    def reset_breakers(self, now: float) -> None:
        """Close every breaker: a new incarnation answers at this address."""
        for breaker in self.breakers.values():
            breaker.record_success(now)

    def statistics(self, now: float) -> PeerProtocolStatistics:
        return PeerProtocolStatistics(
            address=self.address,
            peer_name=self.conn.peer_name if self.conn is not None else "",
            protocol=self.protocol, chain=self.chain,
            connected=self.conn is not None and self.conn.is_open,
            switches=self.switches,
            probing=self.prober is not None and not self.prober.done(),
            last_error=dict(self.errors),
            breakers={k: b.statistics(now) for k, b in self.breakers.items()},
        )
