"""The JSON bodies of ``/api/cluster`` and ``/api/agents``.

Plain dicts of JSON types, built from a :class:`NodeView` at request time. Agents on
other members come from their own ``$node.status`` answer (a short system call each,
all at once), so one dashboard shows every node without every node serving HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._ring.ring import HashRing
from .health import readiness
from .view import NodeView, StatusView

__all__ = ["FANOUT_TIMEOUT_S", "agents_view", "cluster_view", "peer_agents"]

FANOUT_TIMEOUT_S = 1.0
"""How long a member's ``$node.status`` answer may take before it shows as unknown."""

_log = logging.getLogger("phoenix_cluster.web")


def _ring_shares(node: NodeView) -> dict[str, float]:
    ring = node.ring
    if ring is None:
        # An embedded node or a client that knows no member yet: a ring of hosts only.
        hosts = [m.name for m in node.members() if m.role == "member"
                 and m.status in ("alive", "suspect")]
        if not hosts:
            return {}
        ring = HashRing(hosts)
    return ring.shares()


async def peer_agents(node: NodeView) -> dict[str, int | None]:
    """Active agents on every live member, by name (``None``: it did not answer in time).

    This node's own count is read locally; the others are asked at the same time.
    """
    members = [m for m in node.members() if m.role == "member"
               and m.status in ("alive", "suspect")]
    counts: dict[str, int | None] = {}
    asks: dict[str, asyncio.Task[StatusView]] = {}
    for m in members:
        if m.name == node.name:
            counts[m.name] = node.statistics().agents.active_agents
        elif m.address:
            asks[m.name] = asyncio.create_task(node.peer_status(m.address, FANOUT_TIMEOUT_S))
    if asks:
        await asyncio.wait(asks.values(), timeout=FANOUT_TIMEOUT_S + 0.5)
    for name, task in asks.items():
        if not task.done():
            task.cancel()
            counts[name] = None
        elif task.cancelled() or task.exception() is not None:
            _log.debug("node %s: no status from %s: %r", node.name, name,
                       None if task.cancelled() else task.exception())
            counts[name] = None
        else:
            counts[name] = task.result().agents
    return counts


async def cluster_view(node: NodeView, *, fan_out: bool = True) -> dict[str, Any]:
    """Members (state, incarnation, ring share, agents), split-brain state, readiness."""
    status = node.status()
    shares = _ring_shares(node)
    agents = await peer_agents(node) if fan_out else {}
    decision = status.last_decision
    ready = readiness(node)
    ring = node.ring
    return {
        "node": status.name,
        "address": status.address,
        "state": status.state,
        "ready": ready.ready,
        "ready_reason": ready.reason,
        "members": [
            {
                "name": m.name,
                "address": m.address,
                "status": m.status,
                "incarnation": m.incarnation,
                "role": m.role,
                "ring_share": shares.get(m.name, 0.0),
                "agents": agents.get(m.name),
            }
            for m in sorted(status.members, key=lambda m: m.name)
        ],
        "ring": None if ring is None else {"version": ring.version,
                                           "members": len(ring), "vnodes": ring.vnodes},
        "split_brain": {
            "strategy": status.split_brain,
            "last_decision": None if decision is None else {
                "action": decision.action,
                "reason": decision.reason,
                "down": list(decision.down),
                "tie_break": decision.tie_break,
            },
        },
    }


def agents_view(node: NodeView) -> dict[str, Any]:
    """Agents of each kind on this node: active, passive, busy, queued messages."""
    kinds = []
    for name, kr in sorted(node.kinds().items()):
        acts = list(kr.activations.values())
        kinds.append({
            "kind": name,
            "active": len(acts),
            "passive": len(kr.passive),
            "busy": sum(1 for a in acts if a.task is not None),
            "mailbox_depth": sum(len(a.queue) for a in acts if a.queue),
            "mailbox_limit": kr.mailbox_limit,
            "idle_timeout_s": kr.idle_timeout_s,
        })
    s = node.statistics().agents
    return {
        "node": node.name,
        "kinds": kinds,
        "totals": {
            "active": s.active_agents,
            "passive": s.passive_agents,
            "busy": s.busy_agents,
            "mailbox_depth": s.queued_messages,
            "messages_handled": s.messages_handled,
            "activations": s.activations,
            "passivations": s.passivations,
        },
    }
