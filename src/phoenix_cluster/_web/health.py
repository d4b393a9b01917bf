"""Liveness and readiness of a node, as a load balancer or an orchestrator asks.

*Live*: the process answers (its event loop runs). *Ready*: the node is running, has
joined its cluster, holds its share of the ring and was not downed by split-brain
resolution: it serves. A node that is not ready says why.

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
    others = [m for m in status.members if m.name != node.name]
    seeds = [s for s in settings.seeds if s != node.address]
    if (seeds or settings.discovery) and not any(m.status == "alive" for m in others):
        # It was told where its cluster is but has not heard from anybody there yet.
        return Readiness(False, "not joined: no other member seen alive yet")
    ring = node.ring
    if settings.role == "member" and node.address is not None and (
            ring is None or node.name not in ring):
        return Readiness(False, "not on the hash ring yet")
    return Readiness(True, "ready")
