"""The composition root: a :class:`Node` builds the layers from settings and an Env.

One class, split by job: what it is made of and reports (``base.py``, ``health.py``), its
view of the cluster (``view.py``), starting and stopping (``lifecycle.py``), and here its
construction and what users call on it (refs, moves, interceptors). The parts that reach
other nodes are built as it starts (``stack.py``); split-brain handling is
``downing.py``, the transport ``transport.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from .._agents.agent import Agent
from .._agents.inspection import ClusterInspector, Inspector
from .._agents.interceptors import Interceptor
from .._agents.kinds import kind_spec
from .._agents.mailbox import KindRuntime
from .._agents.ref import AgentRef
from .._agents.runtime import AgentRuntime
from .._foundation.env import Env
from .._foundation.settings import Settings, load_settings
from .._registry.services import ClusterServices
from .._resilience.supervisor import ChildSpec, Supervisor
from .._ring.ring import HashRing
from .._stores.base import StateStore
from .._telemetry.bus import TelemetryBus, default_bus
from .._transport.rpc import Inbound, Services
from .._web import HttpEndpoint
from ..errors import ConfigError, NodeUnavailable
from .base import DOWNED_PREFIX, NodeState, NodeStatistics, NodeStatus, SplitBrainDecision
from .downing import Downing
from .lifecycle import Lifecycle
from .stack import AgentStack

__all__ = [
    "DOWNED_PREFIX",
    "Node",
    "NodeState",
    "NodeStatistics",
    "NodeStatus",
    "SplitBrainDecision",
]


class Node(Lifecycle):
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
        self._watcher = None
        self._stopped = asyncio.Event()
        self._stop_reason = ""
        self._shutdown_task = None
        self._transport = None
        self._peers = None
        self._node_services = Services()
        self._inbound = Inbound(self._node_services)
        self._rpc = None
        self._ring = None
        self._membership = None
        self._observer = None
        self._downing = Downing(self.name, settings, self.env, self.telemetry, self._stack,
                                self._runtime, self.request_shutdown, lambda: self._snapshot)
        self._discovery = None
        self._snapshot = None
        self._addresses = {}
        self._services = ClusterServices(self, lambda: self._ring)
        self.registry = self._services.registry
        """Cluster-wide names for agents and values (``docs/registry.md``)."""
        self.groups = self._services.groups
        """Process groups of agents, cluster-wide (``docs/registry.md``)."""
        self.pubsub = self._services.pubsub
        """Topics with subscribers on every node (``docs/registry.md``)."""
        self._table_ring = None
        self._join = None
        self._formed_alone = False
        self._joined = asyncio.Event()
        self._seed_timer = None
        self._discovered = []
        self.address = None
        local = Inspector(self.name, self.kinds, self.env.clock, lambda: self._stack.replicator)
        self.inspection = ClusterInspector(
            local if settings.role == "member" else None, self._hosting_members,
            self._ask_inspect)
        self._http = HttpEndpoint(self) if settings.http is not None else None

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

    async def _ask_inspect(self, address: str, method: str, payload: bytes,
                           timeout_s: float) -> bytes:
        rpc = self._rpc
        if rpc is None:
            raise NodeUnavailable("this node talks to no other node", definite=True)
        return await rpc.call(address, "inspect", method, payload, timeout_s)

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

    def __repr__(self) -> str:
        s = self._runtime.statistics()
        return f"<Node {self.name} {self._state.value} [{s.active_agents} active agents]>"
