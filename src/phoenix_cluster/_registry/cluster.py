"""How the registry services see the cluster and reach the other nodes' services.

A :class:`ClusterLink` holds this node's membership view (fed by the node on every
membership change), reads the node's current hash ring, and calls a service ``$name`` of
another node through the RPC client (``_transport/rpc.py``), or of this node directly.
An embedded node (no RPC client)
is a cluster of one: it owns every name and every call stays local. A client node hosts
nothing, so it owns no names; it still reaches the members that do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._foundation.env import Env
from .._membership.snapshot import Member, MembershipSnapshot
from .._ring.ring import HashRing
from .._transport.base import TransportError
from .._transport.rpc import RpcClient, ServiceHandler
from ..errors import CallTimeout, NodeUnavailable, PhoenixError
from .entries import replica_set

__all__ = ["UNREACHABLE", "ClusterLink"]

_log = logging.getLogger("phoenix_cluster.registry")

UNREACHABLE: tuple[type[PhoenixError], ...] = (NodeUnavailable, CallTimeout, TransportError)
"""Errors that mean "that node did not answer" (try another), not "it said no"."""

_GONE = ("dead", "left")


class ClusterLink:
    """This node's view of the cluster, for the registry, groups and pub/sub.

    Args:
        self_name: this node's name.
        role: ``member`` (may own names) or ``client`` (owns none).
        env: the node's clock.
        ring: returns the node's current hash ring (``None`` before any member is known).
    """

    def __init__(self, self_name: str, role: str, env: Env,
                 ring: Callable[[], HashRing | None]) -> None:
        self.self_name = self_name
        self.role = role
        self.clock = env.clock
        self._ring = ring
        self.rpc: RpcClient | None = None
        self.local: dict[str, ServiceHandler] = {}
        """This node's own services, called directly instead of over a socket."""
        self._members: dict[str, Member] = {}

    # ------------------------------------------------------------------ the view

    @property
    def clustered(self) -> bool:
        """Whether this node talks to others (it has an RPC client)."""
        return self.rpc is not None

    def update(self, snapshot: MembershipSnapshot) -> tuple[list[str], list[str]]:
        """Take a new membership view.

        Returns:
            The nodes that became dead or left, and the nodes that joined or came back
            (alive now, unknown or gone before).
        """
        members = {m.name: m for m in snapshot.members}
        gone: list[str] = []
        joined: list[str] = []
        for name, m in members.items():
            old = self._members.get(name)
            was_gone = old is None or old.status in _GONE
            if m.status in _GONE and (old is None or old.status not in _GONE):
                gone.append(name)
            elif m.status == "alive" and was_gone and name != self.self_name:
                joined.append(name)
        self._members = members
        return gone, joined

    def is_gone(self, node: str) -> bool:
        """Whether this node sees ``node`` dead or left (unknown nodes are not gone)."""
        m = self._members.get(node)
        return m is not None and m.status in _GONE

    def is_live(self, node: str) -> bool:
        """Alive or unknown (not suspected, not gone)."""
        m = self._members.get(node)
        return m is None or m.status == "alive"

    def address(self, node: str) -> str | None:
        m = self._members.get(node)
        return m.address if m is not None and m.address else None

    def ring(self) -> HashRing | None:
        ring = self._ring()
        return ring if ring is not None and len(ring) > 0 else None

    def replicas(self, name: str, n: int) -> list[str]:
        """The nodes that store ``name`` in this node's view, coordinator first."""
        ring = self.ring()
        if ring is None:
            # A member that sees no ring yet (or an embedded node) is a cluster of one.
            return [self.self_name] if self.role == "member" else []
        return replica_set(ring, name, n)

    def ordered(self, replicas: list[str]) -> list[str]:
        """``replicas`` with the suspected ones moved to the end (ring order kept)."""
        return sorted(replicas, key=lambda r: not self.is_live(r))

    def hosts(self) -> list[str]:
        """The members that may store names: the ring, or this node alone."""
        ring = self.ring()
        if ring is None:
            return [self.self_name] if self.role == "member" else []
        return list(ring.members)

    def peers(self) -> list[str]:
        """Every other node (members and clients) this node could reach: alive or
        suspect, with an address."""
        return [m.name for m in self._members.values()
                if m.name != self.self_name and m.address and m.status in ("alive", "suspect")]

    # ------------------------------------------------------------------ talking

    async def call(self, node: str, service: str, method: str, payload: bytes,
                   timeout_s: float) -> bytes:
        """Call ``$service.method`` on ``node`` (this node's own services directly).

        Raises:
            NodeUnavailable, CallTimeout: ``node`` did not answer in time.
            PhoenixError: what the service raised there.
        """
        if node == self.self_name:
            return await self.local[service](method, payload)
        rpc = self.rpc
        address = self.address(node)
        if rpc is None or address is None:
            raise NodeUnavailable(f"no known address for node {node}", definite=True)
        # RpcClient.call keeps the deadline itself (CallTimeout): no second timer here.
        return await rpc.call(address, service, method, payload, timeout_s)

    def start(self, node: str, service: str, method: str, payload: bytes, timeout_s: float,
              answered: Callable[[bytes | BaseException], None]) -> bool:
        """:meth:`call` with no task when ``node`` is another node whose connection is
        open: ``answered`` gets the reply payload or the error :meth:`call` would raise,
        from the connection's reader. ``False``: nothing was sent (use :meth:`call`)."""
        rpc = self.rpc
        if rpc is None or node == self.self_name or self.address(node) is None:
            return False
        return rpc.start_node(service, node, method, payload, timeout_s, answered)

    async def cast(self, node: str, service: str, method: str, payload: bytes,
                   timeout_s: float) -> bool:
        """Send ``$service.method`` to ``node`` without waiting for an answer.

        Returns ``False`` (and logs) when it could not be handed to the connection.
        Casts to one node go over one connection, so they arrive in the order sent.
        """
        if node == self.self_name:
            try:
                await self.local[service](method, payload)
            except PhoenixError as exc:
                _log.warning("local $%s.%s failed: %s", service, method, exc.message)
                return False
            return True
        rpc = self.rpc
        address = self.address(node)
        if rpc is None or address is None:
            return False
        try:
            await rpc.cast(address, service, method, payload, timeout_s)
        except PhoenixError as exc:
            _log.debug("$%s.%s to %s not sent: %r", service, method, node, exc)
            return False
        return True

    def __repr__(self) -> str:
        return f"<ClusterLink {self.self_name} [{len(self._members)} members known]>"
