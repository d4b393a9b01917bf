"""The composition root: a :class:`Node` builds the layers from settings and an Env.

Lifecycle: ``new -> running -> stopping -> stopped``. Layers start in stages and stop in
reverse. The node's own services (today the passivation sweep; transport and membership
as they land) run under a root :class:`Supervisor`; if it gives up, the node shuts
itself down cleanly and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgspec

from .._agents.agent import Agent, kind_spec
from .._agents.inspection import ClusterInspector, Inspector
from .._agents.interceptors import Interceptor
from .._agents.mailbox import KindRuntime
from .._agents.ref import AgentRef
from .._agents.runtime import AgentRuntime, RuntimeStatistics
from .._foundation.env import Env, TimerHandle
from .._foundation.settings import Settings, load_settings
from .._membership.discovery_poller import DiscoveryPoller
from .._membership.discovery_spec import discovery_from_spec
from .._membership.joining import JoinPlan
from .._membership.observer import MembershipObserver
from .._membership.service import MembershipService, SwimSettings
from .._membership.snapshot import Member, MembershipSnapshot, MemberStatus
from .._registry.services import ClusterServices
from .._replication.groups import MAX_REPLICAS
from .._replication.storage import SqliteStorage
from .._resilience.supervisor import ChildSpec, Supervisor, SupervisorEscalation
from .._ring.hashing import key_hash
from .._ring.partitions import PARTITIONS, PartitionTable
from .._ring.ring import HashRing
from .._splitbrain.lease_spec import ClosableLease, checked_lease_spec, lease_from_spec
from .._splitbrain.resolver import SplitBrainResolver
from .._splitbrain.settings import SplitBrainSettings
from .._splitbrain.view import Decision
from .._stores.base import StateStore
from .._telemetry import events
from .._telemetry.bus import TelemetryBus, default_bus
from .._transport.cookie import resolve_secret
from .._transport.fallback import FallbackTransport, parse_chain
from .._transport.memory import MemoryNetwork, MemoryTransport
from .._transport.peers import PeerManager
from .._transport.rpc import Inbound, RpcClient, Services
from .._transport.tcp import TcpTransport
from .._transport.tls import tls_contexts
from .._web import HttpEndpoint
from ..errors import AgentNotFound, AuthenticationError, ConfigError, NodeUnavailable
from .stack import AgentStack

__all__ = [
    "DOWNED_PREFIX",
    "Node",
    "NodeState",
    "NodeStatistics",
    "NodeStatus",
    "SplitBrainDecision",
]

DOWNED_PREFIX = "downed by split-brain resolution: "
"""Start of ``stop_reason`` when this node was on the losing side of a partition."""

_log = logging.getLogger("phoenix_cluster.node")


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


class Node:
    """A Phoenix node: hosts agents, routes messages, runs the cluster's services.

    Use it as an async context manager::

        async with phx.Node() as node:          # an embedded single node
            counter = node.ref(Counter, "alice")
            await counter.increment(5)

    Args:
        name: the node's cluster-wide name (default ``node-<random hex>``).
        listen, seeds, cookie, role, http, data_dir: cluster settings (see
            ``docs/configuration.md``); a single embedded node needs none of them.
        stores: state stores by name for kinds declared with ``store="NAME"``: a URL
            (``sqlite:///PATH``, ``postgresql://...``) or a :class:`StateStore` object
            (docs/state-stores.md).
        env: the clock and random source (tests pass a ``ManualClock``).
        telemetry: the event bus to report to (default: the process-wide one that
            ``phx.telemetry.attach`` uses).
        config_file: a ``phoenix.toml`` to read (default: ``./phoenix.toml`` if present).
        settings: a ready :class:`Settings`; when given, the other options are ignored.
        interceptors: hooks around the agent calls this node sends and runs, in this
            order (``phx.Interceptor``; see ``docs/interceptors.md``).
        **options: any other setting by name, e.g. ``call_timeout_s=1.0``.

    Settings precedence: arguments, then ``PHX_*`` environment variables, then
    ``phoenix.toml``.

    Raises:
        ConfigError: a setting has the wrong form.
    """

    _memory_network: MemoryNetwork | None = None
    """Set (before ``start``) by ``phoenix_cluster.testing.memory``: the node talks through
    this in-process network instead of sockets (unit tests)."""
    _storage_class: type[SqliteStorage] = SqliteStorage
    """What keeps ``data_dir``; the simulator sets a subclass that writes in the event
    loop's own thread, so virtual time never runs past a write."""

    def __init__(
        self,
        name: str | None = None,
        *,
        listen: str | None = None,
        seeds: list[str] | None = None,
        cookie: str | None = None,
        role: str | None = None,
        http: str | None = None,
        data_dir: str | None = None,
        stores: Mapping[str, str | StateStore] | None = None,
        env: Env | None = None,
        telemetry: TelemetryBus | None = None,
        config_file: str | None = None,
        settings: Settings | None = None,
        interceptors: Sequence[Interceptor] = (),
        **options: Any,
    ) -> None:
        urls = {n: u for n, u in (stores or {}).items() if isinstance(u, str)}
        if settings is None:
            overrides = dict(
                name=name, listen=listen, seeds=seeds, cookie=cookie, role=role,
                http=http, data_dir=data_dir, stores=urls or None, **options,
            )
            settings = load_settings(overrides, config_file=config_file)
        self.env = env if env is not None else Env()
        self.settings = settings
        self.name: str = settings.name or f"node-{self.env.random.getrandbits(40):010x}"
        self.incarnation = int(self.env.clock.wall() * 1000)
        self.telemetry = telemetry if telemetry is not None else default_bus
        self._state = NodeState.NEW
        self._stack = AgentStack(self.name, settings, self.env, self.telemetry)
        """The parts that reach other nodes, built as the node starts (``stack.py``)."""
        self._runtime = AgentRuntime(self, settings, self.env, self.telemetry, self._stack)
        for interceptor in interceptors:
            self._runtime.interceptors.add(interceptor)
        self._runtime.state.stored.configure({**settings.stores, **(stores or {})})
        self._supervisor = Supervisor(
            [ChildSpec("passivation", self._passivation_loop)],
            strategy="one_for_one",
            max_restarts=5,
            max_seconds=10.0,
            name=f"node {self.name}",
            clock=self.env.clock,
            on_event=self._supervisor_event,
        )
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stop_reason = ""
        self._shutdown_task: asyncio.Task[None] | None = None
        self._declared_task: asyncio.Task[Any] | None = None
        self._transport: TcpTransport | FallbackTransport | MemoryTransport | None = None
        self._peers: PeerManager | FallbackTransport | None = None
        self._node_services = Services()
        """What peers reach as ``$<service>`` (``_transport/rpc.py``)."""
        self._inbound = Inbound(self._node_services)
        """The transport's handler: services, then agent messages once the router is up."""
        self._rpc: RpcClient | None = None
        """Calls other nodes' services (``None``: an embedded node)."""
        self._ring: HashRing | None = None
        self._membership: MembershipService | None = None
        self._observer: MembershipObserver | None = None
        self._resolver: SplitBrainResolver | None = None
        self._lease: ClosableLease | None = None
        self._downed_members: dict[str, int] = {}  # name -> incarnation a keep downed
        self._discovery: DiscoveryPoller | None = None
        self._snapshot: MembershipSnapshot | None = None
        self._addresses: dict[str, str] = {}
        self._services = ClusterServices(self, lambda: self._ring)
        self.registry = self._services.registry
        """Cluster-wide names for agents and values (``docs/registry.md``)."""
        self.groups = self._services.groups
        """Process groups of agents, cluster-wide (``docs/registry.md``)."""
        self.pubsub = self._services.pubsub
        """Topics with subscribers on every node (``docs/registry.md``)."""
        self._table_ring: HashRing | None = None
        self._join: JoinPlan | None = None  # None: an embedded node, a cluster of one
        self._formed_alone = False
        self._joined = asyncio.Event()
        self._seed_timer: TimerHandle | None = None
        self._discovered: list[str] = []
        self.address: str | None = None
        """The bound ``host:port`` peers reach this node at (``None``: not listening)."""
        local = Inspector(self.name, self.kinds, self.env.clock, lambda: self._stack.replicator)
        self.inspection = ClusterInspector(
            local if settings.role == "member" else None, self._hosting_members,
            self._ask_inspect)
        """Agents on every member and one agent's state (``phx agents``, ``/api/agents/*``)."""
        self._http = HttpEndpoint(self) if settings.http is not None else None

    # ----------------------------------------------------------------- lifecycle

    @property
    def state(self) -> NodeState:
        return self._state

    @property
    def stop_reason(self) -> str:
        """Why the node stopped (empty while it runs)."""
        return self._stop_reason

    async def start(self) -> None:
        """Start the node's services. ``async with node`` calls this for you."""
        if self._state is not NodeState.NEW:
            raise RuntimeError(f"node {self.name} is {self._state.value}; a node starts once")
        self._state = NodeState.RUNNING
        try:
            self._stack.start_tracer()
            await self._start_cluster()
            if self._http is not None:
                await self._http.start()
        except BaseException:
            self._state = NodeState.STOPPED
            self._stopped.set()
            await self._close_cluster()
            await self._stack.aclose_tracer()
            raise
        if self._join is None:
            self._joined.set()
        elif self._join.first_seed and not self._joined.is_set():
            self._seed_timer = self.env.clock.call_later(self.settings.seed_timeout_s,
                                                         self._seed_timeout)
        await self._supervisor.start()
        rebalancer = self._stack.rebalancer
        if rebalancer is not None:
            await self._supervisor.add_child(ChildSpec("rebalancer", rebalancer.run))
        self._watcher = asyncio.get_running_loop().create_task(self._watch_supervisor())
        _log.info("node %s started (role %s%s)", self.name, self.settings.role,
                  f", listening on {self.address}" if self.address else "")
        self.telemetry.execute(events.NODE_STARTED, {}, {"node": self.name})

    async def aclose(self, reason: str = "shutdown") -> None:
        """Shut down gracefully: refuse new work, let in-flight messages finish (up to
        ``shutdown_timeout_s``), deactivate agents, stop services. Idempotent."""
        if self._state in (NodeState.STOPPING, NodeState.STOPPED):
            await self._stopped.wait()
            return
        if self._state is NodeState.NEW:
            self._state = NodeState.STOPPED
            self._stop_reason = reason
            self._stopped.set()
            return
        self._state = NodeState.STOPPING
        self._stop_reason = reason
        _log.info("node %s stopping: %s", self.name, reason)
        try:
            if not reason.startswith(DOWNED_PREFIX):
                await self._stack.hand_off_all(self._ring)
            await self._runtime.aclose(self.settings.shutdown_timeout_s)
            await self._runtime.state.stored.aclose()
            await self._close_cluster()
            await self._supervisor.aclose()
            watcher = self._watcher
            if watcher is not None and watcher is not asyncio.current_task():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        finally:
            await self._stack.aclose_tracer()
            self._state = NodeState.STOPPED
            self._stopped.set()
            self.telemetry.execute(events.NODE_STOPPED, {}, {"node": self.name, "reason": reason})
            _log.info("node %s stopped: %s", self.name, reason)

    async def _start_cluster(self) -> None:
        """Open the transport, membership and routing when this node talks to others.

        An embedded node (no ``listen``, no ``seeds``) opens no socket: it is a cluster of
        one and routes every key to itself through the same runtime.
        """
        s = self.settings
        if s.listen is None and not s.seeds and s.discovery is None:
            return
        # Only a member may found a cluster, so only a member writes a new secret file.
        secret, cookie_path = resolve_secret(s.cookie, s.cookie_file,
                                             create=s.role == "member")
        if cookie_path is not None:
            _log.info("node %s uses the cluster secret in %s", self.name, cookie_path)
        ssl_server, ssl_client = tls_contexts(s.tls_cert, s.tls_key, s.tls_ca,
                                              verify_hostname=s.tls_verify_hostname)
        chain = parse_chain(s.transports)
        services, inbound = self._node_services, self._inbound
        transport: TcpTransport | FallbackTransport | MemoryTransport
        network = self._memory_network
        if network is not None:
            transport = network.transport(
                self.name, self.incarnation, secret, env=self.env, bus=self.telemetry,
                max_frame_bytes=s.max_frame_bytes, handler=inbound, role=s.role)
            self._peers = PeerManager(transport, env=self.env)
        elif chain == ("tcp",):
            transport = TcpTransport(
                self.name, self.incarnation, secret, env=self.env, bus=self.telemetry,
                max_frame_bytes=s.max_frame_bytes, handler=inbound, role=s.role,
                ssl_server=ssl_server, ssl_client=ssl_client,
                handshake_timeout_s=s.handshake_timeout_s,
            )
            self._peers = PeerManager(transport, env=self.env)
        else:
            transport = FallbackTransport(
                self.name, self.incarnation, secret, env=self.env, bus=self.telemetry,
                max_frame_bytes=s.max_frame_bytes, handler=inbound, role=s.role,
                chain=chain, ssl_server=ssl_server, ssl_client=ssl_client,
                tls_cert=s.tls_cert, tls_key=s.tls_key, tls_ca=s.tls_ca,
                handshake_timeout_s=s.handshake_timeout_s,
            )
            self._peers = transport
        self._transport = transport
        rpc = self._rpc = RpcClient(self._peers, self.env.clock, self._runtime.next_request_id)
        services.register("membership", self._membership_call)
        services.register("node", self._node_call)
        services.register("inspect", self.inspection.handle)
        if s.listen is not None:
            self.address = await transport.start(s.listen)
        self._join = JoinPlan(s.seeds, (self.address or "", s.listen or ""), role=s.role,
                              discovery=s.discovery is not None)
        self._formed_alone = self._join.forms_at_once
        stack = self._stack
        stack.start_routing(self._runtime, self._peers, rpc, services, inbound,
                            self._fallback_address)
        self._services.attach(rpc, services)
        if s.role == "member" and self.address is not None:
            await stack.start_replication(self._runtime, rpc, services,
                                          incarnation=self.incarnation, secret=secret,
                                          storage_class=self._storage_class)
            await stack.start_crdt_sync(self._runtime, rpc, services, self._known_members)
        if self.address is not None:
            self._membership = MembershipService(
                self.name, self.address, self.incarnation, secret, sync=self._sync,
                seeds=s.seeds, role=s.role, env=self.env, bus=self.telemetry,
                settings=SwimSettings(probe_interval_s=s.probe_interval_s,
                                      probe_timeout_s=s.probe_timeout_s,
                                      suspicion_mult=s.suspicion_mult),
                datagrams=None if network is None else network.open_datagram_endpoint,
                on_declared_dead=self._declared_dead if s.role == "member" else None,
            )
            self._membership.subscribe(self._on_membership)
            self._on_membership(self._membership.snapshot())
            await self._membership.start()
            if s.role == "member":
                await self._start_split_brain()
        else:
            # A client that accepts no connections cannot gossip: it pulls the table.
            self._observer = MembershipObserver(self.name, s.seeds, self._sync, env=self.env)
            self._observer.subscribe(self._on_membership)
            await self._observer.start()
        if s.discovery is not None:
            provider = discovery_from_spec(s.discovery, env=self.env)
            self._discovery = DiscoveryPoller(provider, self.env, self._on_discovered)
            await self._discovery.start()

    async def _start_split_brain(self) -> None:
        s = self.settings
        settings = SplitBrainSettings(
            strategy=s.split_brain, stable_after_s=s.split_brain_stable_after_s,
            quorum_size=s.split_brain_quorum_size, lease_ttl_s=s.split_brain_lease_ttl_s,
        )
        spec = checked_lease_spec(s.split_brain, s.split_brain_lease)
        if spec is not None:
            self._lease = lease_from_spec(spec, env=self.env)
        self._resolver = SplitBrainResolver.from_settings(
            settings, env=self.env, bus=self.telemetry, self_name=self.name,
            on_down=self._downed, on_keep=self._kept, lease=self._lease,
        )
        assert self._membership is not None
        self._membership.subscribe(self._resolver.update)
        self._resolver.update(self._membership.snapshot())
        self._resolver.start()

    def _declared_dead(self, incarnation: int, by: str, downed: bool) -> None:
        if self._resolver is None:
            return  # split-brain handling has not started yet (it starts with the node)
        if not downed:
            # Only the others' failure detector: membership refutes and the node stays
            # (only a split-brain decision downs). Its keys may have moved meanwhile, so
            # its agents reload from their replicas, whose leaders confirm first.
            for partition in range(PARTITIONS):
                self._runtime.partition_lost(partition, "declared dead")
            return
        # A split-brain decision removed this life: its agents live elsewhere now.
        resolver = self._resolver
        if resolver is not None and self._declared_task is None:
            self._declared_task = asyncio.get_running_loop().create_task(
                resolver.declared_dead(incarnation=incarnation, by=by or None))

    def _kept(self, decision: Decision) -> None:
        # The downed members stop on their own clock: give them stable_after to be gone
        # (the losing side may decide that much later) before replication stops waiting
        # for their memory.
        if self._stack.replicator is not None and decision.down:
            snapshot = self._snapshot
            known = {m.name: m.incarnation for m in snapshot.members} if snapshot else {}
            for name in decision.down:
                self._downed_members[name] = known.get(name, 0)
            self._stack.replicator.members_lost(
                decision.down, after_s=self.settings.split_brain_stable_after_s)
        if self._membership is not None and decision.down:
            self._membership.down(decision.down)  # they cannot refute their way back

    def _downed(self, reason: str) -> None:
        # The losing side of a partition stops serving at once and exits (DOWNED_PREFIX
        # tells ``phx node`` to use its distinct exit code).
        _log.error("node %s downs itself: %s", self.name, reason)
        self.request_shutdown(f"{DOWNED_PREFIX}{reason}")

    def _known_members(self) -> list[str]:
        # Dead ones included: a member this side declared dead may be alive across a
        # healed partition, and a stopping node hands its crdt replicas to it too.
        snapshot = self._snapshot
        return [] if snapshot is None else [m.name for m in snapshot.members
                                            if m.role == "member" and m.status != "left"]

    def _on_membership(self, snapshot: MembershipSnapshot) -> None:
        self._reset_breakers_of_restarted(self._snapshot, snapshot)
        self._snapshot = snapshot
        self._addresses = {m.name: m.address for m in snapshot.members}
        if self._rpc is not None:
            self._rpc.addresses = self._addresses
        if self._downed_members:
            self._note_members_back(snapshot)
        self._note_downed_elsewhere()
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

    def _note_members_back(self, snapshot: MembershipSnapshot) -> None:
        # A downed member back as a newer incarnation answers for itself again.
        for m in snapshot.members:
            downed = self._downed_members.get(m.name)
            if downed is not None and m.incarnation > downed and m.status == "alive":
                del self._downed_members[m.name]
                if self._stack.replicator is not None:
                    self._stack.replicator.member_back(m.name)

    def _note_downed_elsewhere(self) -> None:
        # A split-brain decision another member took (gossiped, or in the state a join
        # pulled) counts here as if taken here: a member that joined after a peer was
        # downed never decides about it itself, and its elections would wait forever for
        # that peer's memory (replication.md, "Lost members"). The margin starts when this
        # node hears of it, which is after the decision.
        membership, replicator = self._membership, self._stack.replicator
        if membership is None or replicator is None:
            return
        heard = {name: life for name, life in membership.downed().items()
                 if name != self.name and name not in self._downed_members}
        if heard:
            self._downed_members.update(heard)
            replicator.members_lost(heard, after_s=self.settings.split_brain_stable_after_s)

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

    async def _node_call(self, method: str, payload: bytes) -> bytes:
        if method != "status":
            raise AgentNotFound(f"node {self.name} has no node method {method!r}")
        return msgspec.msgpack.encode(self.status())

    def status(self) -> NodeStatus:
        """What ``phx status`` shows: this node's view of the cluster (read-only)."""
        decision = self._resolver.last_decision if self._resolver is not None else None
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

    async def _drain_inbound(self, limit_s: float = 1.0) -> None:
        """After a graceful leave, let the requests peers sent before they heard of it
        finish before the connections close (each gets its answer: a reply, or a
        definite ``NodeClosed`` that callers route again), rather than cutting them off
        with an unknown outcome. Bounded by ``limit_s``."""
        connections = getattr(self._transport, "connections", None)
        if connections is None:
            return
        clock = self.env.clock
        deadline = clock.monotonic() + limit_s
        quiet = 0
        while quiet < 2 and clock.monotonic() < deadline:
            busy = any(c.statistics().inbound_tasks for c in connections())
            quiet = 0 if busy else quiet + 1
            await clock.sleep(0.05)

    async def _close_cluster(self) -> None:
        if self._seed_timer is not None:
            self._seed_timer.cancel()
            self._seed_timer = None
        await self._services.aclose()  # hands its names on while the transport is up
        if self._http is not None:
            await self._http.aclose()
        if self._discovery is not None:
            await self._discovery.aclose()
        if self._resolver is not None:
            await self._resolver.aclose()
        if self._lease is not None:
            await self._lease.aclose()
        if self._observer is not None:
            await self._observer.aclose()
        if self._membership is not None:
            leave = not self._stop_reason.startswith(DOWNED_PREFIX)
            await self._membership.aclose(leave=leave)
            if leave:
                await self._drain_inbound()
        await self._stack.aclose()
        if self._peers is not None and self._peers is not self._transport:
            await self._peers.aclose()
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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

    async def wait_stopped(self) -> str:
        """Wait until the node has stopped; returns the reason."""
        await self._stopped.wait()
        return self._stop_reason

    def request_shutdown(self, reason: str) -> None:
        """Ask the node to shut down soon (safe from signal handlers and callbacks)."""
        if self._state is NodeState.RUNNING:
            loop = asyncio.get_running_loop()
            self._shutdown_task = loop.create_task(self.aclose(reason))

    def install_signal_handlers(self) -> None:
        """Shut down gracefully on SIGTERM and SIGINT (what ``phx node`` does)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown, f"signal {sig.name}")

    async def _watch_supervisor(self) -> None:
        try:
            await self._supervisor.wait()
        except SupervisorEscalation as exc:
            _log.error("node %s shutting down: its services failed: %s", self.name, exc)
            await self.aclose(f"services failed: {exc}")

    def _supervisor_event(self, name: str, info: Any) -> None:
        event = {
            "child_crashed": events.SUPERVISOR_CHILD_CRASHED,
            "child_restarted": events.SUPERVISOR_CHILD_RESTARTED,
            "escalated": events.SUPERVISOR_ESCALATED,
        }.get(name)
        if event is not None:
            self.telemetry.execute(event, {}, {"node": self.name, **dict(info)})

    async def supervise(self, spec: ChildSpec) -> None:
        """Run a long-lived service of yours under the node's root supervisor.

        It is restarted according to ``spec.restart`` and stopped with the node.
        """
        await self._supervisor.add_child(spec)

    # ----------------------------------------------------------------- services

    async def _passivation_loop(self) -> None:
        clock = self.env.clock
        while True:
            await clock.sleep(self._sweep_interval())
            self._runtime.sweep_idle()
            if self._stack.placement is not None:
                self._stack.placement.sweep()

    def _sweep_interval(self) -> float:
        # Sweep at least twice per shortest idle timeout so agents passivate on time.
        interval = self.settings.passivation_sweep_s
        for kr in self._runtime._kinds.values():
            interval = min(interval, kr.idle_timeout_s / 2)
        return interval

    # ----------------------------------------------------------------- agents

    def add_interceptor(self, interceptor: Interceptor) -> None:
        """Add a call interceptor after (inside) those this node has; it sees the calls
        that start from now on (``docs/interceptors.md``).

        Raises:
            TypeError: ``interceptor`` is not a ``phx.Interceptor``.
        """
        self._runtime.interceptors.add(interceptor)

    def ref(self, kind: type[Agent] | str, key: str) -> AgentRef:
        """A reference to the agent ``key`` of ``kind`` (a class, or a kind name).

        Nothing is activated until the first message.

        Raises:
            AgentNotFound: ``kind`` is a name that no imported class registered.
        """
        if not isinstance(key, str):
            raise TypeError(f"agent keys are strings, got {type(key).__name__}")
        return AgentRef(self._runtime, kind_spec(kind), key)

    async def migrate(self, ref: AgentRef, *, to: str) -> None:
        """Move the agent ``ref`` to the node named ``to``, with its state and the
        messages waiting for it; no message is lost or run twice (see
        ``docs/distributed-agents.md``). Returns once it is active on ``to``.

        Raises:
            NodeUnavailable: ``to`` is not a live member, or the agent's holder did not
                answer (definite: the agent stayed where it was).
            ConfigError: a ``placement="stateless"`` kind: it has no single host.
        """
        if ref._spec.stateless:
            raise ConfigError(f"{ref.kind}/{ref.key} is a stateless worker: every member "
                              "serves it, there is no host to move", key="placement")
        placement = self._stack.placement
        if placement is None:
            if to != self.name:
                raise NodeUnavailable(f"{self.name} is a single embedded node; there is no "
                                      f"node {to!r} to migrate to", definite=True)
            return
        await placement.migrate(ref._spec, ref.key, to)

    async def where(self, ref: AgentRef) -> str:
        """The name of the node that hosts (or will host) the agent ``ref``; for a
        stateless worker, this node on a member, else one member that serves it."""
        placement = self._stack.placement
        if placement is None or (ref._spec.stateless and self.settings.role == "member"):
            return self.name
        return await placement.locate(ref._spec, ref.key)

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

    async def _ask_inspect(self, address: str, method: str, payload: bytes,
                           timeout_s: float) -> bytes:
        rpc = self._rpc
        if rpc is None:
            raise NodeUnavailable("this node talks to no other node", definite=True)
        return await rpc.call(address, "inspect", method, payload, timeout_s)

    def _me(self) -> Member:
        status: MemberStatus = "alive" if self._state is NodeState.RUNNING else "left"
        return Member(name=self.name, address=self.address or "", status=status,
                      incarnation=self.incarnation, role=self.settings.role)

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            name=self.name,
            state=self._state.value,
            agents=self._runtime.statistics(),
            restarts=self._supervisor.statistics().total_restarts,
            calls_retried=0 if self._stack.router is None else self._stack.router.calls_retried,
        )

    @property
    def http_url(self) -> str | None:
        """The dashboard's URL while the HTTP endpoint serves (``None``: no ``http``)."""
        return None if self._http is None else self._http.url

    @property
    def ring(self) -> HashRing | None:
        """The hash ring of the hosting members this node sees (``None``: none yet)."""
        return self._ring

    def kinds(self) -> dict[str, KindRuntime]:
        """The agent kinds hosted here, by name (a copy; for telemetry, read-only)."""
        return dict(self._runtime._kinds)

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

    def __repr__(self) -> str:
        s = self._runtime.statistics()
        return f"<Node {self.name} {self._state.value} [{s.active_agents} active agents]>"

