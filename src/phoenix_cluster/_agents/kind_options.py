"""The class keywords of an agent kind, checked: ``durability``, ``placement``,
``replicas``, ``consistency``, ``store`` and the others ``Agent`` takes
(``class Counter(phx.Agent, kind=..., replicas=5)``).

Each wrong value, or a combination that cannot work (a crdt kind with a store, a
stateless worker with replicated state), is a ``ConfigError`` naming the keyword, raised
when the class is defined. What the keywords mean is ``Agent``'s docstring (``agent.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._placement.policies import Policy, check_policy
from .._replication.groups import DEFAULT_REPLICAS, MAX_REPLICAS, MIN_REPLICAS
from ..errors import ConfigError

__all__ = ["DEFAULT_MAX_WORKERS", "Consistency", "Durability", "KindOptions",
           "check_kind_options"]

Durability = Literal["quorum", "async", "none"]
_DURABILITIES = ("quorum", "async", "none")
Consistency = Literal["fenced", "crdt"]
_CONSISTENCIES = ("fenced", "crdt")

DEFAULT_MAX_WORKERS = 4
"""Activations of one stateless key per node when ``max_workers`` is not given."""


@dataclass(frozen=True, slots=True)
class KindOptions:
    """A kind's class keywords once checked (a stateless worker's placement and
    durability already turned into ``"hash"`` and ``"none"``)."""

    durability: Durability
    idle_timeout: float | None
    policy: Policy
    replicas: int
    mailbox_limit: int | None
    consistency: Consistency
    workers: int
    """``max_workers`` of a stateless kind; 0 for any other."""
    store: str | None
    state_version: int
    reentrant: bool


def check_kind_options(
    where: str,
    *,
    durability: Durability | None,
    idle_timeout: float | None,
    placement: Policy | Literal["stateless"],
    replicas: int,
    mailbox_limit: int | None,
    consistency: Consistency,
    max_workers: int | None,
    store: str | None,
    state_version: int,
    reentrant: bool,
) -> KindOptions:
    """The class keywords of the kind ``where`` names, checked.

    Raises:
        ConfigError: a keyword has a wrong value, or keywords that cannot go together.
    """
    workers = _stateless_workers(where, placement, max_workers, durability, consistency)
    if workers:
        placement, durability = "hash", "none"
    elif durability is None:
        durability = "quorum"
    if durability not in _DURABILITIES:
        raise ConfigError(
            f"{where}: durability must be one of {_DURABILITIES}, got {durability!r}",
            key="durability",
        )
    if idle_timeout is not None and not idle_timeout > 0:
        raise ConfigError(
            f"{where}: idle_timeout must be > 0 seconds, got {idle_timeout!r}",
            key="idle_timeout",
        )
    policy = check_policy(placement, where)
    if (not isinstance(replicas, int) or isinstance(replicas, bool)
            or not MIN_REPLICAS <= replicas <= MAX_REPLICAS):
        raise ConfigError(f"{where}: replicas must be an int from {MIN_REPLICAS} to "
                          f"{MAX_REPLICAS}, got {replicas!r}", key="replicas")
    if consistency == "crdt" and replicas != DEFAULT_REPLICAS:
        # Merge replication (crdt_sync.py) pushes to and repairs the 3 ring owners of
        # a partition; other counts are not built for it.
        raise ConfigError(f"{where}: a crdt kind has {DEFAULT_REPLICAS} replicas; "
                          f"replicas={replicas} is only for fenced kinds", key="replicas")
    if mailbox_limit is not None and (not isinstance(mailbox_limit, int) or mailbox_limit < 1):
        raise ConfigError(
            f"{where}: mailbox_limit must be an int >= 1, got {mailbox_limit!r}",
            key="mailbox_limit",
        )
    if consistency not in _CONSISTENCIES:
        raise ConfigError(
            f"{where}: consistency must be one of {_CONSISTENCIES}, got {consistency!r}",
            key="consistency",
        )
    if not isinstance(reentrant, bool):
        raise ConfigError(f"{where}: reentrant must be True or False, got {reentrant!r}",
                          key="reentrant")
    if consistency == "crdt" and policy != "hash":
        raise ConfigError(
            f"{where}: consistency='crdt' needs placement='hash' (its replicas are the "
            f"key's ring owners), got {placement!r}",
            key="placement",
        )
    if store is not None and (not isinstance(store, str) or not store):
        raise ConfigError(f"{where}: store must be a non-empty store name, got {store!r}",
                          key="store")
    if store is not None and consistency == "crdt":
        raise ConfigError(f"{where}: a crdt kind merges its replicas and cannot use a "
                          f"store (store={store!r})", key="store")
    if store is not None and workers:
        raise ConfigError(f"{where}: a stateless worker keeps no state and cannot use a "
                          f"store (store={store!r})", key="store")
    if (not isinstance(state_version, int) or isinstance(state_version, bool)
            or not 1 <= state_version < 2**32):
        raise ConfigError(f"{where}: state_version must be an int from 1, got "
                          f"{state_version!r}", key="state_version")
    return KindOptions(durability, idle_timeout, policy, replicas, mailbox_limit,
                       consistency, workers, store, state_version, reentrant)


def _stateless_workers(where: str, placement: object, max_workers: object,
                       durability: object, consistency: object) -> int:
    """``max_workers`` of a ``placement="stateless"`` kind (0 for any other kind).

    Raises:
        ConfigError: ``max_workers`` without ``placement="stateless"`` or not an int
            >= 1; a stateless kind with a durability other than ``"none"`` or with
            ``consistency="crdt"`` (it keeps no replicated state).
    """
    if placement != "stateless":
        if max_workers is not None:
            raise ConfigError(f"{where}: max_workers needs placement='stateless', got "
                              f"placement={placement!r}", key="max_workers")
        return 0
    if max_workers is None:
        max_workers = DEFAULT_MAX_WORKERS
    if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
        raise ConfigError(f"{where}: max_workers must be an int >= 1, got {max_workers!r}",
                          key="max_workers")
    if durability not in (None, "none"):
        raise ConfigError(f"{where}: a placement='stateless' kind replicates no state, so "
                          f"its durability is 'none'; got {durability!r}", key="durability")
    if consistency != "fenced":
        raise ConfigError(f"{where}: a placement='stateless' kind has no consistency "
                          f"option; got consistency={consistency!r}", key="consistency")
    return max_workers
