"""Test helpers for Phoenix applications and for Phoenix itself.

``LocalCluster`` starts real node processes on loopback and injects faults;
``ManualClock`` drives a node's time by hand; ``wait_until`` waits for a condition with a
deadline instead of sleeping and hoping.
"""

from __future__ import annotations

from .._foundation.env import Env as Env
from .._foundation.env import ManualClock as ManualClock
from ._local_cluster import ClusterNode as ClusterNode
from ._local_cluster import LocalCluster as LocalCluster
from ._local_cluster import free_port as free_port
from ._wait import wait_until as wait_until

__all__ = ["ClusterNode", "Env", "LocalCluster", "ManualClock", "free_port", "wait_until"]
