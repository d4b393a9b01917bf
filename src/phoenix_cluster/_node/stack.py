"""The parts of a node that reach other nodes, built bottom-up as the node starts.

:class:`AgentStack` is the agent runtime's :class:`~.._agents.cluster.Cluster`: the node
gives it to the runtime at construction, and the stack builds its parts in order when
the node starts, each from the ones below it and the runtime: the tracer first, then
the placement service, the router (which sends through both) and the ``$placement``
server, the rebalancer, then the replicator and crdt sync, each given the runtime's
callbacks at construction (``on_lost``, ``on_led``, ``on_merged``). Nothing is assigned
to the runtime or to a part after the part was built; a part a node does not need (an
embedded node has no router, a client no replicator) stays ``None``.

It also closes them, and on a graceful leave hands this node's partitions and agents
over before it goes (:meth:`AgentStack.hand_off_all`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from functools import partial

from .._agents.dispatch import Peers, Router
from .._agents.inbound_waits import serve_waiting
from .._agents.kinds import lookup_kind
from .._agents.placement import PlacementService
from .._agents.placement_server import PlacementServer
from .._agents.rebalance import Rebalancer
from .._agents.runtime import AgentRuntime
from .._foundation.env import Env
from .._foundation.settings import Settings
from .._replication.crdt_sync import CrdtSync
from .._replication.export import BackupService, KindStatus
from .._replication.groups import MAX_REPLICAS
from .._replication.service import ReplicationSettings, Replicator
from .._replication.storage import SqliteStorage, storage_path
from .._ring.partitions import PartitionTable
from .._ring.ring import HashRing
from .._telemetry.bus import TelemetryBus
from .._telemetry.tracing import NodeTracer, start_node_tracer
from .._transport.rpc import Inbound, RpcClient, Services
from ..errors import AgentNotFound

__all__ = ["AgentStack"]

_log = logging.getLogger("phoenix_cluster.node")


class AgentStack:
    """The tracer, placement, router, rebalancer, replicator and crdt sync of one node.

    Args:
        name: the node's name.
        settings: the node's settings.
        env: its clock and randomness.
        bus: the telemetry bus it reports to.
    """

    def __init__(self, name: str, settings: Settings, env: Env, bus: TelemetryBus) -> None:
        self.name = name
        self.settings = settings
        self.env = env
        self.bus = bus
        self.tracer: NodeTracer | None = None
        self.placement: PlacementService | None = None
        self.router: Router | None = None
        self.rebalancer: Rebalancer | None = None
        """Moves agents to their homes after a table change (members only)."""
        self.replicator: Replicator | None = None
        self.crdt_sync: CrdtSync | None = None

    def start_tracer(self) -> None:
        """Spans of this node's messages when ``otlp_endpoint`` is set (first: every
        part above sees it from its construction)."""
        self.tracer = start_node_tracer(self.settings.otlp_endpoint, self.name, self.bus)

    def start_routing(self, runtime: AgentRuntime, peers: Peers, rpc: RpcClient,
                      services: Services, inbound: Inbound,
                      fallback: Callable[[str, str], str]) -> None:
        """Placement, the router and its ``$placement`` server, and (on a member) the
        rebalancer; agent messages from peers go to the router from now on."""
        s = self.settings
        # A member rebalances after each table change (the rebalancer waits on this).
        table_changed = asyncio.Event() if s.role == "member" else None
        placement = self.placement = PlacementService(
            runtime, self_name=self.name, clock=self.env.clock, bus=self.bus,
            fallback=fallback, rpc=rpc, app_version=s.app_version,
            on_change=None if table_changed is None else table_changed.set,
        )
        router = self.router = Router(runtime, peers, self_name=self.name,
                                      placement=placement, rpc=rpc, tracer=self.tracer)
        services.register("placement", PlacementServer(placement, router).handle)
        waiting = partial(serve_waiting, router)  # what try_now leaves to a task
        tracer = self.tracer
        if tracer is None:
            inbound.serve_agents(waiting, router.try_now)
        else:
            inbound.serve_agents(partial(tracer.serve, waiting),
                                 partial(tracer.serve_now, router.try_now))
        if table_changed is not None:
            self.rebalancer = Rebalancer(runtime, placement, self.env.clock, table_changed)

    async def start_replication(self, runtime: AgentRuntime, rpc: RpcClient,
                                services: Services, *, incarnation: int, secret: bytes,
                                storage_class: type[SqliteStorage]) -> None:
        """Quorum replication of agent state (``docs/design/replication.md``), and
        ``$backup`` for ``phx backup`` / ``phx restore``."""
        storage = None
        data_dir = self.settings.data_dir
        if data_dir is not None:
            # A data_dir belongs to one cluster: its secret's digest (never the secret).
            cluster = hashlib.blake2b(secret, digest_size=8, person=b"phx-data-dir").hexdigest()
            storage = storage_class(storage_path(data_dir, self.name), cluster=cluster,
                                    node=self.name)
        replicator = Replicator(
            self.name, partial(rpc.call_node, "replication"), self.env,
            incarnation=incarnation,
            bus=self.bus, storage=storage, on_lost=runtime.partition_lost,
            on_led=runtime.reminders.partition_led,
            settings=ReplicationSettings(eager=True),
            start=partial(rpc.start_node, "replication"),
        )
        await replicator.start()
        services.register("replication", replicator.handle, replicator.handle_now)
        self.replicator = replicator
        backup = BackupService(replicator, _kind_status,
                               partial(runtime.partition_lost, reason="restored"),
                               lambda kind: lookup_kind(kind).replicas)
        services.register("backup", backup.handle)

    async def start_crdt_sync(self, runtime: AgentRuntime, rpc: RpcClient,
                              services: Services, known: Callable[[], list[str]]) -> None:
        """Merge replication of ``consistency="crdt"`` kinds (``_replication/crdt_sync.py``)."""
        active = runtime.active_active
        sync = CrdtSync(self.name, partial(rpc.call_node, "crdt"), self.env,
                        schema_of=active.schema, on_merged=active.merged, known=known)
        await sync.start()
        services.register("crdt", sync.handle)
        self.crdt_sync = sync

    async def hand_off_all(self, ring: HashRing | None) -> None:
        """A graceful leave: switch to the table without this node, then move every
        agent held here to its home there (bounded by ``shutdown_timeout_s``)."""
        placement, rebalancer = self.placement, self.rebalancer
        if placement is None or rebalancer is None or len(placement.alive - {self.name}) == 0:
            return
        placement.leaving = True
        budget = self.settings.shutdown_timeout_s
        clock = self.env.clock
        started = clock.monotonic()
        replicator = self.replicator
        if replicator is not None and ring is not None and len(ring.members) > 1:
            # Leadership first: the next primaries elect themselves while this node still
            # answers (it shows them every write it committed), so the agents moved
            # below are replicated at their new home from their first message.
            table = PartitionTable.build(ring.without_member(self.name), MAX_REPLICAS)
            handed = await replicator.hand_over(table, budget / 2)
            _log.info("node %s handed over %d partitions in %.2fs before leaving",
                      self.name, handed, clock.monotonic() - started)
            if replicator.others_leaving:
                return  # the whole cluster is stopping: no member would take the agents
        try:
            async with asyncio.timeout(budget):
                moved = await rebalancer.follow_homes()
        except TimeoutError:
            _log.warning("node %s: handing off its agents took longer than %.1fs; the rest "
                         "stop here", self.name, budget)
            return
        _log.info("node %s handed off %d agents before leaving (%.2fs since it began to "
                  "leave)", self.name, moved, clock.monotonic() - started)

    async def aclose(self) -> None:
        """Close placement, replication and crdt sync (the transport is still up)."""
        if self.placement is not None:
            await self.placement.aclose()
        if self.replicator is not None:
            await self.replicator.aclose()
        if self.crdt_sync is not None:
            await self.crdt_sync.aclose()

    async def aclose_tracer(self) -> None:
        """Send the spans still batched (last: the node's shutdown is traced too)."""
        if self.tracer is not None:
            await self.tracer.aclose()


def _kind_status(name: str) -> KindStatus:
    """Whether this process hosts kind ``name`` with replicated state (``phx restore``)."""
    try:
        spec = lookup_kind(name)
    except AgentNotFound:
        return "missing"
    return "unreplicated" if spec.durability == "none" or spec.consistency == "crdt" else "ok"
