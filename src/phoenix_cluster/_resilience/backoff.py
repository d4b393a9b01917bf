"""Jittered exponential backoff as a pure function of the attempt number and a random source.

Reconnect loops (the transport's peer manager today, retries and membership later) ask
"how long until attempt ``n``?" and sleep on their own clock. Keeping the policy free of
clocks and globals means the simulator replays the same delays from a seeded
``Env.random``, and a test checks the bounds without sleeping at all.

Jitter matters more than the curve: after a peer restarts, every node that lost it would
otherwise redial in lock-step and hit it at the same instant (AWS Architecture Blog,
"Exponential Backoff And Jitter"). Imports only ``errors`` (layer L0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from phoenix_cluster.errors import ConfigError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt ``n``: ``min(max_s, base_s * multiplier**n)``, minus jitter.

    Args:
        base_s: delay before the first retry (attempt 0). Small, so a blip heals fast.
        max_s: ceiling; long enough not to hammer a dead peer, short enough that a peer
            coming back is found within that time.
        multiplier: growth per attempt; 2 halves the retry rate per failure.
        jitter: fraction of the delay that is random, ``0`` (none, lock-step) to ``1``
            ("full jitter": uniform between 0 and the delay). The default 0.5 keeps at
            least half of the delay, so retries never bunch up at zero.
    """

    base_s: float = 0.1
    max_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_s:
            raise ConfigError(
                f"backoff needs 0 < base_s <= max_s, got base_s={self.base_s!r},"
                f" max_s={self.max_s!r}",
                key="base_s",
            )
        if self.multiplier < 1:
            raise ConfigError(
                f"backoff multiplier must be >= 1, got {self.multiplier!r}", key="multiplier"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(
                f"backoff jitter must be in [0, 1], got {self.jitter!r}", key="jitter"
            )

    def ceiling(self, attempt: int) -> float:
        """The delay before ``attempt`` without jitter (the upper bound of :meth:`delay`)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # Compare exponents instead of computing multiplier**attempt, which overflows a
        # float after a few hundred failures of a long-dead peer.
        delay = self.base_s
        for _ in range(attempt):
            delay *= self.multiplier
            if delay >= self.max_s:
                return self.max_s
        return min(delay, self.max_s)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before ``attempt`` (0 = the first retry after a failure).

        Args:
            attempt: how many retries already failed in a row.
            rng: the node's random source (``env.random``), so runs can be replayed.

        Returns:
            A value in ``[ceiling * (1 - jitter), ceiling]``.
        """
        ceiling = self.ceiling(attempt)
        return ceiling * (1.0 - self.jitter * rng.random())
