"""SWIM's timers: the settings every timer and limit comes from, and Lifeguard's suspicion.

:class:`SwimSettings` holds each membership timer and limit with its default explained
once; :func:`suspicion_timeouts` derives a suspicion's shortest and longest timeout from
them and the cluster's size, and :class:`Suspicion` is one running suspicion whose
timeout shrinks as independent members confirm it (Lifeguard's dynamic suspicion,
Dadgar et al., 2018).

Pure: no I/O, no asyncio, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from phoenix_cluster.errors import ConfigError

__all__ = ["Suspicion", "SwimSettings", "suspicion_timeouts"]


@dataclass(frozen=True, slots=True)
class SwimSettings:
    """Every membership timer and limit, each default explained once.

    Attributes:
        probe_interval_s: the protocol period: one member probed per period. Detection
            time and probe traffic (one ping and ack per node per period) scale with it.
        probe_timeout_s: how long to wait for a direct ack before asking helpers. Far above
            a LAN round trip (< 1 ms) and below half the period, so the indirect probes
            still have time.
        indirect_probes: k, helpers asked to probe a target that missed its direct ack.
            Three makes a false failure through independent lossy paths very unlikely.
        suspicion_mult: scales the suspicion timeout
            (``mult * max(1, log10 n) * probe_interval``: 4 s below 10 members) and sets
            the confirmations that shrink it to the minimum (``mult - 2``).
        suspicion_max_timeout_mult: a suspicion nobody else confirms lasts this many
            times the minimum (Lifeguard): a lone node with a bad link accuses slowly.
        retransmit_mult: λ: each update is piggybacked λ·⌈log₂(n+1)⌉ times by each node
            that learns it, enough for an epidemic to reach everybody with high
            probability.
        sync_interval_s: push-pull full-state exchange period with one random member;
            repairs whatever gossip lost. Each round also tries one dead member, to merge
            the views again after a partition heals.
        sync_timeout_s: how long one push-pull exchange may take.
        reconnect_interval_s: how often (at most once per probe round) a push-pull goes
            to one member declared dead by failure detection alone (not downed): a cut
            or pause that ends is noticed within about this long, and the member
            refutes, well before a split-brain decision (``stable_after_s``) could down
            it. Every ``sync_interval_s`` one dead member of any kind is tried as well.
        join_retry_s: while no other member is known, push-pull to a random seed this
            often, so nodes may start in any order.
        max_datagram_bytes: the largest datagram sent, seal included: below a 1,500-byte
            Ethernet MTU minus IP and UDP headers, so datagrams never fragment.
        health_max_multiplier: the most Lifeguard may stretch our own timers (8 times).
        lag_check_interval_s: how often the service measures its event-loop lag.
        lag_threshold_s: lag that counts against our own health: a fifth of the probe
            timeout, well above a healthy loop's hiccups.
        leave_timeout_s: how long a graceful leave waits for acks of its ``left``.
        forget_after_s: dead and left members stay listed this long, then shrink to a
            tombstone (name and incarnation) that keeps them from resurrecting.
    """

    probe_interval_s: float = 1.0
    probe_timeout_s: float = 0.5
    indirect_probes: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    sync_interval_s: float = 10.0
    sync_timeout_s: float = 5.0
    reconnect_interval_s: float = 1.0
    join_retry_s: float = 1.0
    max_datagram_bytes: int = 1400
    health_max_multiplier: int = 8
    lag_check_interval_s: float = 0.5
    lag_threshold_s: float = 0.1
    leave_timeout_s: float = 1.0
    forget_after_s: float = 3600.0

    def __post_init__(self) -> None:
        for key in ("probe_interval_s", "probe_timeout_s", "sync_interval_s",
                    "sync_timeout_s", "reconnect_interval_s", "join_retry_s",
                    "lag_check_interval_s",
                    "leave_timeout_s", "forget_after_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}", key=key)
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError(
                f"probe_timeout_s ({self.probe_timeout_s}) must be shorter than"
                f" probe_interval_s ({self.probe_interval_s})",
                key="probe_timeout_s",
            )
        for key in ("suspicion_mult", "suspicion_max_timeout_mult", "retransmit_mult",
                    "health_max_multiplier"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)!r}", key=key)
        if self.indirect_probes < 0:
            raise ConfigError(f"indirect_probes must be >= 0, got {self.indirect_probes}",
                              key="indirect_probes")
        if not 512 <= self.max_datagram_bytes <= 65_507:
            raise ConfigError(
                f"max_datagram_bytes must be in 512..65507, got {self.max_datagram_bytes}",
                key="max_datagram_bytes",
            )


def suspicion_timeouts(settings: SwimSettings, n: int) -> tuple[float, float, int]:
    """``(min_s, max_s, k)`` for a suspicion in a cluster of ``n`` live members.

    ``k`` is how many independent confirmations bring the timeout down to ``min_s``
    (memberlist: ``suspicion_mult - 2``, or 0 when there are too few members to give them).
    """
    min_s = settings.suspicion_mult * max(1.0, math.log10(max(1, n))) * settings.probe_interval_s
    k = settings.suspicion_mult - 2
    if n - 2 < k:
        k = 0
    return min_s, settings.suspicion_max_timeout_mult * min_s, max(0, k)


class Suspicion:
    """A running suspicion with Lifeguard's shrinking timeout."""

    __slots__ = ("accusers", "k", "max_s", "min_s", "start")

    def __init__(self, start: float, min_s: float, max_s: float, k: int, by: str) -> None:
        self.start = start
        self.min_s = min_s
        self.max_s = max_s
        self.k = k
        self.accusers = {by}

    def confirm(self, by: str) -> bool:
        """Count an independent accuser; ``False`` if it was counted already."""
        if by in self.accusers:
            return False
        self.accusers.add(by)
        return True

    def deadline(self) -> float:
        confirmations = len(self.accusers) - 1
        if self.k < 1 or confirmations >= self.k:
            return self.start + self.min_s
        frac = math.log(confirmations + 1) / math.log(self.k + 1)
        return self.start + max(self.min_s, self.max_s - frac * (self.max_s - self.min_s))
