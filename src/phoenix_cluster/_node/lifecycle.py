"""A node's lifecycle: ``new -> running -> stopping -> stopped``.

Layers start in stages and stop in reverse. The node's own services (the passivation
sweep, the rebalancer, services of yours) run under a root :class:`Supervisor`; if it
gives up, the node shuts itself down cleanly and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import TracebackType
from typing import Any, Self

from .._membership.discovery_poller import DiscoveryPoller
from .._membership.discovery_spec import discovery_from_spec
from .._membership.joining import JoinPlan
from .._membership.observer import MembershipObserver
from .._membership.service import MembershipService, SwimSettings
from .._resilience.supervisor import ChildSpec, SupervisorEscalation
from .._telemetry import events
from .._transport.rpc import RpcClient
from .base import DOWNED_PREFIX, NodeState
from .health import Health
from .transport import open_transport
from .view import MembershipView

__all__ = ["Lifecycle"]

_log = logging.getLogger("phoenix_cluster.node")


class Lifecycle(MembershipView, Health):
    """Starting and stopping a :class:`~.node.Node`, and its supervised services."""

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
        services, inbound = self._node_services, self._inbound
        network = self._memory_network
        opened = open_transport(self.name, self.incarnation, s, self.env, self.telemetry,
                                inbound, network)
        secret, transport = opened.secret, opened.transport
        self._transport, self._peers = transport, opened.peers
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
                on_declared_dead=self._downing.declared_dead if s.role == "member" else None,
            )
            self._membership.subscribe(self._on_membership)
            self._on_membership(self._membership.snapshot())
            await self._membership.start()
            if s.role == "member":
                self._downing.start(self._membership)
        else:
            # A client that accepts no connections cannot gossip: it pulls the table.
            self._observer = MembershipObserver(self.name, s.seeds, self._sync, env=self.env)
            self._observer.subscribe(self._on_membership)
            await self._observer.start()
        if s.discovery is not None:
            provider = discovery_from_spec(s.discovery, env=self.env)
            self._discovery = DiscoveryPoller(provider, self.env, self._on_discovered)
            await self._discovery.start()

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
        await self._downing.aclose()
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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
