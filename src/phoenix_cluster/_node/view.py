"""A node's view of its cluster: membership snapshots, the ring and the partition table,
joining (seeds, discovery, forming a cluster of one) and the ``$membership`` service."""

from __future__ import annotations

import logging

from .._membership.snapshot import MembershipSnapshot
from .._replication.groups import MAX_REPLICAS
from .._ring.hashing import key_hash
from .._ring.partitions import PartitionTable
from .._ring.ring import HashRing
from ..errors import AgentNotFound, AuthenticationError, NodeUnavailable
from .base import NodeBase, NodeState

__all__ = ["MembershipView"]

_log = logging.getLogger("phoenix_cluster.node")


class MembershipView(NodeBase):
    """How a :class:`~.node.Node` follows its membership (gossiped, or pulled by a client)."""

    def _on_membership(self, snapshot: MembershipSnapshot) -> None:
        self._reset_breakers_of_restarted(self._snapshot, snapshot)
        self._snapshot = snapshot
        self._addresses = {m.name: m.address for m in snapshot.members}
        if self._rpc is not None:
            self._rpc.addresses = self._addresses
        self._downing.on_membership(snapshot, self._membership)
        self._services.on_membership(snapshot)  # registry caches, released holders
        # Most changes (a suspicion, a refutation, a client joining) leave the hosting
        # members as they are: rebuilding 160 vnodes per member each time would be waste.
        hosts = {m.name for m in snapshot.members
                 if m.role == "member" and m.status in ("alive", "suspect")}
        current = self._ring
        if current is None or set(current.members) != hosts:
            self._ring = HashRing.from_snapshot(snapshot) if hosts else None
        if self._stack.placement is not None:
            self._stack.placement.update(self._ring, self._addresses)
        ring = self._ring
        # A node with seeds that sees only itself has not joined yet (it just started,
        # maybe from empty memory): a table of itself alone would have it elect itself
        # the sole replica of every partition. Its replicator waits until it has joined,
        # or until it forms a cluster of one (joining.py says when it may).
        replicator = self._stack.replicator
        if (replicator is not None and ring is not None and ring is not self._table_ring
                and (len(ring.members) > 1 or self._formed_alone
                     or self._table_ring is not None)):
            self._table_ring = ring
            # As wide as the largest replica count: a kind of N replicas uses the first
            # N of each set (replication.md, "Replica counts"); crdt kinds keep 3.
            table = PartitionTable.build(ring, MAX_REPLICAS)
            replicator.update(table, ring.members)
            if self._stack.crdt_sync is not None:
                self._stack.crdt_sync.update(table.narrowed(3), ring.members)
        if not self._joined.is_set() and self._serves(snapshot):
            self._now_joined()

    def _serves(self, snapshot: MembershipSnapshot) -> bool:
        # A member that replicates serves once it has a partition table; anything else
        # (a client, a member without an address) once it sees a hosting member alive.
        if self._stack.replicator is not None:
            return self._table_ring is not None
        return any(m.name != self.name and m.role == "member" and m.status == "alive"
                   for m in snapshot.members)

    def _now_joined(self) -> None:
        self._joined.set()
        if self._seed_timer is not None:
            self._seed_timer.cancel()
            self._seed_timer = None
        members = 0 if self._ring is None else len(self._ring.members)
        if self._formed_alone and members == 1:
            _log.info("node %s formed a cluster of one", self.name)
        else:
            _log.info("node %s joined the cluster (%d hosting members)", self.name, members)

    def _seed_timeout(self) -> None:
        self._seed_timer = None
        join = self._join
        if self._joined.is_set() or self._state is not NodeState.RUNNING or join is None:
            return
        if not join.may_form_alone(self.address or "", self._discovered):
            _log.info("node %s has not joined within %.1fs; discovery found %s, whose lowest "
                      "address forms the cluster: waiting for it", self.name,
                      self.settings.seed_timeout_s, ", ".join(self._discovered))
            self._seed_timer = self.env.clock.call_later(self.settings.seed_timeout_s,
                                                         self._seed_timeout)
            return
        _log.warning("node %s heard from no other node within %.1fs (%s); as the first seed "
                     "it forms a new cluster of one, which the others join",
                     self.name, self.settings.seed_timeout_s, join.describe())
        self._formed_alone = True
        snapshot = self._snapshot
        if snapshot is not None:
            self._on_membership(snapshot)

    def _known_members(self) -> list[str]:
        # Dead ones included: a member this side declared dead may be alive across a
        # healed partition, and a stopping node hands its crdt replicas to it too.
        snapshot = self._snapshot
        return [] if snapshot is None else [m.name for m in snapshot.members
                                            if m.role == "member" and m.status != "left"]

    def _reset_breakers_of_restarted(self, before: MembershipSnapshot | None,
                                     now: MembershipSnapshot) -> None:
        # A member alive again as a new incarnation answers at its address: the failures
        # of the old one must not keep callers (and migrations) away until the breaker's
        # cool-down ends.
        # One back after it was declared dead (a cut or a pause that ended) gets a new
        # connection too: the old one may sit out TCP's retransmission backoff.
        if before is None or self._peers is None:
            return
        known = {m.name: m for m in before.members}
        for m in now.members:
            was = known.get(m.name)
            if m.status == "alive" and was is not None and was.incarnation != m.incarnation:
                self._peers.reset(m.address, redial=was.status == "dead")

    def _on_discovered(self, seeds: list[str]) -> None:
        others = [a for a in seeds if a != self.address]
        self._discovered = others
        if self._membership is not None:
            self._membership.join([*self.settings.seeds, *others])

    async def _sync(self, address: str, payload: bytes) -> bytes:
        rpc = self._rpc
        assert rpc is not None
        try:
            reply = await rpc.call(address, "membership", "sync", payload, 5.0)
        except Exception as exc:
            join = self._join
            if join is not None and not self._joined.is_set():
                line = join.failed(address, exc)
                if line is not None:
                    # A wrong cookie never heals by itself; an unreachable seed is often
                    # just a node that starts a moment later.
                    level = logging.WARNING if isinstance(exc, AuthenticationError) \
                        else logging.INFO
                    _log.log(level, "node %s %s", self.name, line)
            raise
        if self._join is not None:
            self._join.answered(address)
        return reply

    async def _membership_call(self, method: str, payload: bytes) -> bytes:
        if method != "sync" or self._membership is None:
            raise AgentNotFound(f"node {self.name} has no membership method {method!r}")
        return self._membership.handle_sync(payload)

    def _fallback_address(self, kind: str, key: str) -> str:
        """Where to send a message while no member is known."""
        seeds = self.settings.seeds
        if not seeds or self.settings.role == "member":
            raise NodeUnavailable(
                f"no member node can host {kind}/{key} (no member is known yet; check the "
                "seeds or discovery)",
                definite=True,
            )
        # A client that knows no members yet asks a seed, which redirects.
        return seeds[key_hash(kind, key) % len(seeds)]
