"""What a node is made of and what it reports: its states, the status and statistics it
shows (``phx status``, ``phx node``), and :class:`NodeBase`, the parts every side of a
:class:`~.node.Node` reads (``health.py``, ``view.py``, ``lifecycle.py``, ``node.py``:
one class, split by job; ``Node.__init__`` builds every part).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import msgspec

from .._agents.inspection import ClusterInspector
from .._agents.runtime import AgentRuntime, RuntimeStatistics
from .._foundation.env import Env, TimerHandle
from .._foundation.settings import Settings
from .._membership.discovery_poller import DiscoveryPoller
from .._membership.joining import JoinPlan
from .._membership.observer import MembershipObserver
from .._membership.service import MembershipService
from .._membership.snapshot import Member, MembershipSnapshot
from .._registry.services import ClusterServices
from .._replication.storage import SqliteStorage
from .._resilience.supervisor import Supervisor
from .._ring.ring import HashRing
from .._telemetry.bus import TelemetryBus
from .._transport.fallback import FallbackTransport
from .._transport.memory import MemoryNetwork, MemoryTransport
from .._transport.peers import PeerManager
from .._transport.rpc import Inbound, RpcClient, Services
from .._transport.tcp import TcpTransport
from .._web import HttpEndpoint
from .downing import DOWNED_PREFIX, Downing
from .stack import AgentStack

__all__ = [
    "DOWNED_PREFIX",
    "NodeBase",
    "NodeState",
    "NodeStatistics",
    "NodeStatus",
    "SplitBrainDecision",
]

class NodeState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class SplitBrainDecision(msgspec.Struct, frozen=True):
    """The last split-brain decision this node took (``keep`` or ``down_self``)."""

    action: str
    reason: str
    down: tuple[str, ...] = ()
    tie_break: str = ""


class NodeStatus(msgspec.Struct, frozen=True):
    """One node's view of the cluster, as ``phx status`` shows it."""

    name: str
    address: str
    state: str
    members: tuple[Member, ...]
    agents: int
    split_brain: str
    last_decision: SplitBrainDecision | None = None
    leading: int = 0
    """Partitions whose replicas this node leads (quorum replication)."""


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    name: str
    state: str
    agents: RuntimeStatistics
    restarts: int
    calls_retried: int = 0
    """Calls from this node retried after a definite failure to reach their owner (a
    refused connection, an open breaker), each counted once: the caller saw an error only
    if its deadline passed first."""


class NodeBase:
    """The parts of a node (set by ``Node.__init__``, and by ``start`` for those that reach
    other nodes)."""

    _memory_network: MemoryNetwork | None = None
    """Set (before ``start``) by ``phoenix_cluster.testing.memory``: the node talks through
    this in-process network instead of sockets (unit tests)."""
    _storage_class: type[SqliteStorage] = SqliteStorage
    """What keeps ``data_dir``; the simulator sets a subclass that writes in the event
    loop's own thread, so virtual time never runs past a write."""

    env: Env
    settings: Settings
    name: str
    incarnation: int
    telemetry: TelemetryBus
    address: str | None
    """The bound ``host:port`` peers reach this node at (``None``: not listening)."""
    inspection: ClusterInspector
    """Agents on every member and one agent's state (``phx agents``, ``/api/agents/*``)."""
    _state: NodeState
    _stop_reason: str
    _stopped: asyncio.Event
    _shutdown_task: asyncio.Task[None] | None
    _watcher: asyncio.Task[None] | None
    _supervisor: Supervisor
    _stack: AgentStack
    """The parts that reach other nodes, built as the node starts (``stack.py``)."""
    _runtime: AgentRuntime
    _downing: Downing
    """Split-brain decisions and downed members (``downing.py``)."""
    _services: ClusterServices
    _http: HttpEndpoint | None
    _node_services: Services
    """What peers reach as ``$<service>`` (``_transport/rpc.py``)."""
    _inbound: Inbound
    """The transport's handler: services, then agent messages once the router is up."""
    _transport: TcpTransport | FallbackTransport | MemoryTransport | None
    _peers: PeerManager | FallbackTransport | None
    _rpc: RpcClient | None
    """Calls other nodes' services (``None``: an embedded node)."""
    _membership: MembershipService | None
    _observer: MembershipObserver | None
    _discovery: DiscoveryPoller | None
    _snapshot: MembershipSnapshot | None
    _addresses: dict[str, str]
    _ring: HashRing | None
    _table_ring: HashRing | None
    _join: JoinPlan | None
    """``None``: an embedded node, a cluster of one."""
    _formed_alone: bool
    _joined: asyncio.Event
    _seed_timer: TimerHandle | None
    _discovered: list[str]
