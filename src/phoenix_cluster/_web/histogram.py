"""Histogram counts for the single-threaded event loop, and quantiles of a window.

:class:`Buckets` holds a Prometheus histogram's counts with fixed bounds. Why not
prometheus-client's own ``Histogram``: it takes a lock on every observation (about
650 ns here); these are touched only from the node's event loop, so a bisect and two
additions (about 130 ns) do, and the exposition is still prometheus-client's.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["Buckets", "quantile"]


class Buckets:
    """Counts per upper bound (``le``) plus the sum, as a Prometheus histogram has."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are "<= le".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count of values <= le)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(total)))
        return out


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of already sorted values (``None``: no values)."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
