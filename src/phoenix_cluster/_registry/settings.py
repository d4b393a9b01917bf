"""Tunables of the registry, groups and pub/sub services (defaults explained once)."""

from __future__ import annotations

from dataclasses import dataclass

from .entries import DEFAULT_REPLICAS
from .store import DEFAULT_TOMBSTONE_TTL_S

__all__ = ["RegistrySettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrySettings:
    """How the registry, groups and pub/sub behave. Every node should use the same."""

    replicas: int = DEFAULT_REPLICAS
    """Owners per name: a registration is acknowledged once a majority stored it."""

    timeout_s: float = 2.0
    """How long one request to one node may take (a registration waits for at most
    this long per replica, in parallel)."""

    settle_s: float = 0.3
    """After a membership change, wait this long for more changes before handing names
    to their new owners (a burst of changes then costs one hand-off)."""

    reassert_interval_s: float = 30.0
    """How often each holder re-sends the names it holds to their owners, which
    restores names an owner lost (a restart, a wrongly released holder) and resolves
    conflicts left by a partition. Membership changes trigger it too."""

    tombstone_ttl_s: float = DEFAULT_TOMBSTONE_TTL_S
    """How long an owner remembers an unregistered registration, refusing late copies."""

    cache_limit: int = 100_000
    """Names kept in each node's lookup cache (oldest dropped first)."""

    batch: int = 1_000
    """Registrations per hand-off or re-assertion frame."""

    fanout_timeout_s: float = 2.0
    """How long ``groups.members``, ``registry.names`` and confirmed publishes wait for
    each node's answer; a node that does not answer in time is left out."""

    subscriber_queue_limit: int = 10_000
    """Messages waiting for one slow subscriber before new ones are dropped for it."""

    reorder_timeout_s: float = 1.0
    """How long a node holds a publisher's message that arrived before an earlier one
    (frames overtaking each other while two connections between the nodes overlap)
    before it gives the earlier one up for lost. Normally a few milliseconds suffice."""
