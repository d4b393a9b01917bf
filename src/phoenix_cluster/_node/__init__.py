"""The composition root: :class:`Node` builds the layers from settings, bottom-up
(``node.py``), its started parts in ``stack.py``."""

from .node import DOWNED_PREFIX, Node, NodeState, NodeStatistics, NodeStatus, SplitBrainDecision

__all__ = [
    "DOWNED_PREFIX",
    "Node",
    "NodeState",
    "NodeStatistics",
    "NodeStatus",
    "SplitBrainDecision",
]
