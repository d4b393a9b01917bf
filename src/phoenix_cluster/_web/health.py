"""Liveness and readiness of a node, as a load balancer or an orchestrator asks.

*Live*: the process answers (its event loop runs). *Ready*: the node is running, has
joined its cluster or formed one (``Node.joined``), holds its share of the ring, has been
caught up on every partition it replicates (``Node.lagging_partitions``) and was not
downed by split-brain resolution: it serves. A node that is not ready says why.

What other members look like changes neither. A suspect or unreachable peer is that
peer's problem (the failure detector and the split-brain resolver deal with it); if it
made every node unready, one slow pod would take every pod out of a Kubernetes service
at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .view import NodeView

__all__ = ["Readiness", "readiness"]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


def readiness(node: NodeView) -> Readiness:
    """Whether ``node`` should receive traffic now, and the reason if not."""
    status = node.status()
    if status.state != "running":
        why = f": {node.stop_reason}" if node.stop_reason else ""
        return Readiness(False, f"node is {status.state}{why}")
    decision = status.last_decision
    if decision is not None and decision.action == "down_self":
        return Readiness(False, f"downed by split-brain resolution: {decision.reason}")
    settings = node.settings
    if not node.joined:
        # Neither joined through a seed nor formed a cluster of one: it cannot serve.
        return Readiness(False, f"not joined: {node.join_report()}")
    ring = node.ring
    if settings.role == "member" and node.address is not None and (
            ring is None or node.name not in ring):
        return Readiness(False, "not on the hash ring yet")
    lagging = node.lagging_partitions
    if lagging:
        return Readiness(False, f"replicas not caught up yet: {lagging} partitions")
    return Readiness(True, "ready")
