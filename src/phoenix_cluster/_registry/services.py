"""Builds ``node.registry``, ``node.groups`` and ``node.pubsub`` and plugs them into a node.

The node makes one :class:`ClusterServices` when it is created (an embedded node uses
the services as they are, a cluster of one), calls :meth:`~ClusterServices.attach` once
its RPC client exists, forwards every membership snapshot, and closes it before its transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .._agents.ref import AgentRef
from .._foundation.env import Env
from .._membership.snapshot import MembershipSnapshot
from .._ring.ring import HashRing
from .._telemetry.bus import TelemetryBus
from .._transport.rpc import RpcClient, Services
from .cluster import ClusterLink
from .groups import Groups
from .pubsub import PubSub
from .registry import Registry
from .settings import RegistrySettings

__all__ = ["ClusterServices", "HostNode"]


class HostNode(Protocol):
    """What the services need from the node that hosts them."""

    name: str
    incarnation: int
    env: Env
    telemetry: TelemetryBus

    @property
    def settings(self) -> Any: ...

    def ref(self, kind: Any, key: str) -> AgentRef: ...


class ClusterServices:
    """The registry, groups and pub/sub of one node, and their shared cluster link.

    Args:
        node: the hosting node.
        ring: returns the node's current hash ring.
        settings: tunables (defaults suit clusters of up to tens of nodes).
    """

    def __init__(self, node: HostNode, ring: Callable[[], HashRing | None],
                 settings: RegistrySettings | None = None) -> None:
        s = settings if settings is not None else RegistrySettings()
        self.link = ClusterLink(node.name, node.settings.role, node.env, ring)
        self.registry = Registry(self.link, boot=node.incarnation, refs=node.ref,
                                 env=node.env, bus=node.telemetry, settings=s)
        self.groups = Groups(self.link, refs=node.ref, settings=s)
        self.pubsub = PubSub(self.link, env=node.env, bus=node.telemetry, settings=s)
        self.link.local.update(registry=self.registry.service.handle, groups=self.groups.handle,
                               pubsub=self.pubsub.handle)

    def attach(self, rpc: RpcClient, services: Services) -> None:
        """Offer the services to peers (``$registry``, ``$groups``, ``$pubsub``) and
        reach theirs through ``rpc``."""
        self.link.rpc = rpc
        for name, handler in self.link.local.items():
            immediate = self.registry.service.handle_now if name == "registry" else None
            services.register(name, handler, immediate)
        self.registry.start()

    def on_membership(self, snapshot: MembershipSnapshot) -> None:
        gone, joined = self.link.update(snapshot)
        self.registry.on_membership(gone, joined)

    async def aclose(self) -> None:
        await self.registry.aclose()
        await self.pubsub.aclose()
