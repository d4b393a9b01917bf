"""Split-brain settings, every default explained once, and the strategy factory.

Bad values raise :class:`~phoenix_cluster.errors.ConfigError` naming the key, what was
expected and what arrived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from phoenix_cluster.errors import ConfigError

from .strategies import (
    DownAll,
    KeepMajority,
    KeepOldest,
    LeaseMajority,
    StaticQuorum,
    Strategy,
)

__all__ = ["DownAction", "SplitBrainSettings", "StrategyName", "make_strategy"]

StrategyName = Literal["keep-majority", "static-quorum", "keep-oldest", "lease", "down-all"]
DownAction = Literal["exit", "rejoin"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitBrainSettings:
    """How this node resolves partitions. Every node of a cluster must use the same values.

    Raises:
        ConfigError: a value has the wrong form; ``key`` names the setting.
    """

    strategy: StrategyName = "keep-majority"
    """``keep-majority`` (default: no configuration, no external service; the bigger side
    survives, ties go to the side with the lowest address), ``static-quorum`` (a side
    survives iff it has ``quorum_size`` members; needs ``quorum_size``), ``keep-oldest``
    (the side with the oldest member survives), ``lease`` (the side holding an external
    lease survives; needs a lease provider) or ``down-all`` (every node downs itself)."""

    stable_after_s: float = 7.0
    """How long the set of unreachable members must stay unchanged before deciding. It
    must exceed the failure detector's suspicion time plus gossip spread, so both sides
    see the same picture and a flapping link never triggers a decision. Longer: slower
    recovery from a real partition; shorter: more nodes downed by passing trouble. 7 s
    suits clusters up to ~10 members with a ~3 s detector; add time for larger ones."""

    quorum_size: int | None = None
    """``static-quorum`` only: the members a side needs to survive. Choose a majority of
    the planned cluster size; with more than ``2 * quorum_size - 1`` members every side
    downs itself on a partition, since two sides could then both reach it."""

    down_if_alone: bool = True
    """``keep-oldest`` only: if the oldest member is alone on its side, it downs itself
    and the other side survives, so one failing oldest node cannot take the cluster."""

    lease_ttl_s: float = 60.0
    """``lease`` only: how long the winning side holds the lease. It must outlast the
    time the losing side needs to decide (about ``stable_after_s``), with margin."""

    lease_acquire_delay_for_minority_s: float = 2.0
    """``lease`` only: how long a minority side waits before trying to acquire, so the
    majority usually wins the lease when both sides can reach the lease service."""

    lease_acquire_timeout_s: float = 5.0
    """``lease`` only: how long one acquire may take; a side that cannot get an answer in
    time downs itself (a late success only means nobody wins, never two winners)."""

    down_action: DownAction = "exit"
    """What a downed node does: ``exit`` (leave gracefully if it can, then exit with
    ``EXIT_DOWNED`` = 3 so a supervisor restarts it as a fresh incarnation) or ``rejoin``
    (stop serving, drop its agents, and rejoin through the seeds as a new incarnation)."""

    def __post_init__(self) -> None:
        if self.strategy not in get_args(StrategyName):
            raise ConfigError(
                f"split-brain strategy must be one of {', '.join(get_args(StrategyName))}; "
                f"got {self.strategy!r}",
                key="strategy",
            )
        if self.down_action not in get_args(DownAction):
            raise ConfigError(
                f"split-brain down_action must be 'exit' or 'rejoin'; got {self.down_action!r}",
                key="down_action",
            )
        for key in ("stable_after_s", "lease_ttl_s", "lease_acquire_timeout_s"):
            _positive_seconds(key, getattr(self, key), allow_zero=False)
        _positive_seconds(
            "lease_acquire_delay_for_minority_s",
            self.lease_acquire_delay_for_minority_s,
            allow_zero=True,
        )
        quorum = self.quorum_size
        if quorum is not None and (
            isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1
        ):
            raise ConfigError(
                f"split-brain quorum_size must be a positive integer; got {quorum!r}",
                key="quorum_size",
            )
        if self.strategy == "static-quorum" and quorum is None:
            raise ConfigError(
                "split-brain strategy 'static-quorum' needs quorum_size (a majority of the "
                "planned cluster size); got None",
                key="quorum_size",
            )
        if not isinstance(self.down_if_alone, bool):
            raise ConfigError(
                f"split-brain down_if_alone must be true or false; got {self.down_if_alone!r}",
                key="down_if_alone",
            )


def _positive_seconds(key: str, value: object, *, allow_zero: bool) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        expected = "a finite number of seconds" + (" >= 0" if allow_zero else " > 0")
        raise ConfigError(f"split-brain {key} must be {expected}; got {value!r}", key=key)


def make_strategy(settings: SplitBrainSettings) -> Strategy:
    """The strategy ``settings`` describes (validated when the settings were built)."""
    match settings.strategy:
        case "keep-majority":
            return KeepMajority()
        case "static-quorum":
            assert settings.quorum_size is not None  # checked in __post_init__
            return StaticQuorum(settings.quorum_size)
        case "keep-oldest":
            return KeepOldest(down_if_alone=settings.down_if_alone)
        case "lease":
            return LeaseMajority(settings.lease_acquire_delay_for_minority_s)
        case "down-all":
            return DownAll()
