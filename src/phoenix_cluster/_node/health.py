"""What a node says about itself: its status (``phx status``), statistics, readiness
(joined, caught up: ``/health/ready``, ``phx node``'s READY line) and its members."""

from __future__ import annotations

import asyncio

import msgspec

from .._membership.snapshot import Member, MemberStatus
from ..errors import AgentNotFound, NodeUnavailable
from .base import NodeBase, NodeState, NodeStatistics, NodeStatus, SplitBrainDecision

__all__ = ["Health"]


class Health(NodeBase):
    """Status, statistics and readiness of a :class:`~.node.Node`."""

    def status(self) -> NodeStatus:
        """What ``phx status`` shows: this node's view of the cluster (read-only)."""
        decision = self._downing.last_decision
        replicator = self._stack.replicator
        return NodeStatus(
            name=self.name,
            address=self.address or "",
            state=self._state.value,
            members=tuple(self.members()),
            agents=self._runtime.statistics().active_agents,
            split_brain=self.settings.split_brain,
            last_decision=None if decision is None else SplitBrainDecision(
                decision.action, decision.reason, tuple(sorted(decision.down)),
                decision.tie_break),
            leading=0 if replicator is None else replicator.statistics().leading,
        )

    async def _node_call(self, method: str, payload: bytes) -> bytes:
        if method != "status":
            raise AgentNotFound(f"node {self.name} has no node method {method!r}")
        return msgspec.msgpack.encode(self.status())

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            name=self.name,
            state=self._state.value,
            agents=self._runtime.statistics(),
            restarts=self._supervisor.statistics().total_restarts,
            calls_retried=0 if self._stack.router is None else self._stack.router.calls_retried,
        )

    async def peer_status(self, address: str, timeout_s: float = 2.0) -> NodeStatus:
        """The member at ``address`` as it sees itself (its ``$node.status``).

        Raises:
            NodeUnavailable: this node talks to no peers, or the member did not answer.
            TimeoutError: no answer within ``timeout_s``.
        """
        rpc = self._rpc
        if rpc is None:
            raise NodeUnavailable(f"node {self.name} talks to no peers", definite=True)
        async with asyncio.timeout(timeout_s):
            reply = await rpc.call(address, "node", "status", b"", timeout_s)
        return msgspec.msgpack.decode(reply, type=NodeStatus)

    @property
    def joined(self) -> bool:
        """Whether the node has joined or formed its cluster and can serve (an embedded
        node always has). ``phx node`` prints READY, and ``/health/ready`` can say
        ready, only once this is true."""
        return self._joined.is_set()

    async def wait_joined(self) -> None:
        """Wait until :attr:`joined` (bound it with ``asyncio.timeout``)."""
        await self._joined.wait()

    def join_report(self) -> str:
        """Why the node has not joined yet: each seed that failed and how (wrong cookie,
        unreachable), or which seeds have not answered. Empty once joined."""
        if self._joined.is_set() or self._join is None:
            return ""
        return self._join.describe()

    @property
    def lagging_partitions(self) -> int:
        """How many partitions this member replicates but has not been caught up on
        since it started (0 on clients and embedded nodes). A restarted member may lack
        committed writes until each partition's leader has caught it up: until then it
        is not ready (``/health/ready``, ``phx node``'s READY line), so a rolling
        restart never takes the next node while a partition has a single up-to-date
        copy (docs/design/replication.md, "Rolling restarts")."""
        replicator = self._stack.replicator
        return 0 if replicator is None else len(replicator.lagging())

    async def wait_caught_up(self, poll_s: float = 0.05) -> bool:
        """Wait until :attr:`lagging_partitions` is 0; ``False`` if the node stopped."""
        while self.lagging_partitions and self._state is NodeState.RUNNING:
            await self.env.clock.sleep(poll_s)
        return self._state is NodeState.RUNNING

    def members(self) -> list[Member]:
        """The members this node sees, itself included (name, address, status,
        incarnation, role), sorted by name."""
        snapshot = self._snapshot
        if snapshot is not None and snapshot.members:
            members = list(snapshot.members)
            if all(m.name != self.name for m in members):
                members.append(self._me())
            return sorted(members, key=lambda m: m.name)
        return [self._me()]

    def _hosting_members(self) -> list[tuple[str, str]]:
        """``(name, address)`` of the live members that host agents (this one too)."""
        return [(m.name, m.address) for m in self.members()
                if m.role == "member" and m.status in ("alive", "suspect")]

    def _me(self) -> Member:
        status: MemberStatus = "alive" if self._state is NodeState.RUNNING else "left"
        return Member(name=self.name, address=self.address or "", status=status,
                      incarnation=self.incarnation, role=self.settings.role)
