"""The placement service of one node: where a message for an agent goes.

The protocol is written in ``docs/design/migration.md``. Every agent has a *home* (its
partition's primary, ``home_table.py``). Hash agents live there; agents placed by a
policy or moved on purpose have a *pin* in the home's directory (``directory.py``).
Moves are pulls (``migration.py``); casts that reach a member after their agent left are
forwarded (``forwarding.py``); which members can host a kind comes from their polled
reports (``member_loads.py``). This module builds those parts and answers the routing
questions: where an outbound message goes (:meth:`PlacementService.route`) and whether
an inbound one is served here, redirected, or placed first (:meth:`PlacementService.admit`).
The peers' side of ``$placement`` is ``placement_server.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .._foundation.env import Clock
from .._replication.types import Record
from .._ring.hashing import key_hash
from .._ring.partitions import partition_of
from .._ring.ring import HashRing
from .._telemetry.bus import TelemetryBus
from .._transport.rpc import RpcClient
from .._transport.tasks import TaskSet
from ..errors import NodeUnavailable
from . import handoff as wire
from .agent import foreign_kind
from .capability import no_member_hosts
from .directory import Directory, Tombstone
from .forwarding import CastForwarder
from .handoff import HandoffRecord
from .home_table import HomeTable
from .kinds import KindSpec, find_kind, lookup_kind
from .member_loads import MemberLoads
from .migration import Migrations
from .reroute import PLACE, Place

if TYPE_CHECKING:
    from .runtime import AgentRuntime

__all__ = ["PLACE", "PlacementService", "Tombstone"]

Redirect = tuple[str, str]
"""``(node name, address)`` a message should go to instead."""


class PlacementService:
    """Routing decisions and agent moves for one node (see the module docstring).

    Args:
        runtime: the node's agent runtime.
        self_name: this node's name.
        clock: the node's clock.
        bus: telemetry.
        fallback: ``(kind, key) -> address`` used while no member is known (a client
            asks a seed, which redirects); raises ``NodeUnavailable`` when there is none.
        window_s: how long after a table change a new home pulls from previous holders.
        tombstone_s: how long a handed-off agent's tombstone redirects.
        rpc_timeout_s: timeout of one placement request to a peer.
        rpc: calls other nodes' ``$placement`` service (``None``: an embedded node).
        app_version: the application version this member runs (rolling upgrades).
        on_change: called after each table change (the rebalancer listens).
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        self_name: str,
        clock: Clock,
        bus: TelemetryBus,
        fallback: Callable[[str, str], str],
        window_s: float = 60.0,
        tombstone_s: float = 60.0,
        rpc_timeout_s: float = 5.0,
        rpc: RpcClient | None = None,
        app_version: str = "",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.rpc = rpc
        self.self_name = self_name
        self.clock = clock
        self.bus = bus
        self.fallback = fallback
        self.on_change = on_change
        self.rpc_timeout_s = rpc_timeout_s
        self.tasks = TaskSet(f"placement of {self_name}")
        """Forwards of casts, relays of calls for agents that moved, and load polls."""
        self.homes = HomeTable(self_name, clock, window_s)
        client = wire.PlacementClient(rpc, self.address, rpc_timeout_s)
        self.members = MemberLoads(self.homes, client, runtime.load, self.tasks, app_version)
        self.directory = Directory(self.homes, self.members, runtime.holds, client)
        self.forwarder = CastForwarder(client, self_name, bus, self.tasks)
        self.migrations = Migrations(runtime, self.directory, bus, tombstone_s)
        self._admissions: dict[tuple[str, str], list[Any]] = {}
        self._stateless_turn = 0
        """Calls of stateless kinds this client spread over the members."""

    # ----------------------------------------------------------------- the view

    def update(self, ring: HashRing | None, addresses: dict[str, str]) -> None:
        """A new membership view: new homes, dead hosts' pins dropped, handoffs reclaimed."""
        if not self.homes.update(ring, addresses):
            return
        self.directory.view_changed()
        self.migrations.reclaim()
        self.members.view_changed()
        if self.on_change is not None:
            self.on_change()

    @property
    def alive(self) -> frozenset[str]:
        return self.homes.alive

    @property
    def leaving(self) -> bool:
        return self.homes.leaving

    @leaving.setter
    def leaving(self, leaving: bool) -> None:
        self.homes.set_leaving(leaving)

    @property
    def pinned_here(self) -> set[tuple[str, str]]:
        return self.directory.pinned_here

    @property
    def proxied(self) -> set[tuple[str, str]]:
        return self.directory.proxied

    # Every message's route asks for a home and an address: both read the table's
    # attributes here rather than call into ``home_table.py``, which would add a file
    # to the walk of every call (docs/design/architecture.md).

    def home(self, kind: str, key: str) -> str | None:
        """The agent's home (its partition's primary); ``None`` when no member is known."""
        owners = self.homes.owners
        if owners is None:
            return None
        return owners[partition_of(key_hash(kind, key))]

    def address(self, name: str) -> str:
        """The address of member ``name``.

        Raises:
            NodeUnavailable: no address is known for it (definite).
        """
        address = self.homes.addresses.get(name)
        if not address:
            raise NodeUnavailable(f"no address known for node {name!r}", definite=True)
        return address

    # ----------------------------------------------------------------- outbound

    def route(self, spec: KindSpec, key: str) -> str | Place | None:
        """Where a message sent from this node goes: an address, ``None`` (here) or
        :data:`PLACE` (this node is the home and must choose a host first)."""
        if spec.stateless:
            return self._stateless_route(spec, key)
        k = (spec.name, key)
        homes, directory = self.homes, self.directory
        tomb = directory.tombstones.get(k)
        if tomb is not None and not self.migrations.outlived(spec, key, tomb):
            return self.address(tomb.to)
        if spec.name in self.members.excluded_kinds:  # (inline: see home())
            spec = foreign_kind(spec.name)
        if not homes.leaving and self.runtime.holds(spec, key):
            return None
        learnt = directory.routes.get(k)
        if learnt is not None and learnt in homes.alive:
            return None if learnt == self.self_name else self.address(learnt)
        home = self.home(spec.name, key)
        if home is None:
            return self.fallback(spec.name, key)
        if home != self.self_name:
            return self.address(home)
        pin = directory.pins.get(k)
        if pin is not None:
            return None if pin == self.self_name else self.address(pin)
        return None if spec.hashed and not self.members.outdated(spec.name) else PLACE

    def _stateless_route(self, spec: KindSpec, key: str) -> str | None:
        """A stateless worker is served here on a member; a client spreads its calls
        over the members in turn (a leaving member's callers go elsewhere too)."""
        homes = self.homes
        if self.runtime.hosts_agents and not homes.leaving:
            return None
        hosts = sorted(homes.alive - {self.self_name})
        if not hosts:
            return self.fallback(spec.name, key)
        self._stateless_turn += 1
        return self.address(hosts[self._stateless_turn % len(hosts)])

    async def resolve(self, spec: KindSpec, key: str) -> str | None:
        """Finish :meth:`route`'s :data:`PLACE`: choose and pin a host; its address or None."""
        spec = self.members.standing_in(spec)
        host = await self.directory.place(spec, key, self.self_name)
        if host == self.self_name and spec.foreign:
            raise no_member_hosts(spec.name)
        return None if host == self.self_name else self.address(host)

    def learn(self, spec: KindSpec, key: str, host: str) -> None:
        """Remember where a redirect said the agent lives."""
        self.directory.learn(spec, key, host)

    def forget(self, spec: KindSpec, key: str) -> None:
        self.directory.forget(spec, key)

    async def locate(self, spec: KindSpec, key: str) -> str:
        """The node that holds (or will host) the agent, asking its home."""
        return await self.directory.locate(spec, key)

    # ----------------------------------------------------------------- inbound

    def spec_for(self, kind: str) -> KindSpec:
        """The spec of an inbound message's kind: a :func:`foreign_kind` stand-in when
        this member does not host it (it directs the agent to a member that does).
        :meth:`MemberLoads.spec_for` answers the same, off the path of a message (inline
        here: see :meth:`home`).

        Raises:
            AgentNotFound: an unknown kind on a node outside any cluster.
        """
        spec = find_kind(kind)
        if spec is not None and kind not in self.members.excluded_kinds:
            return spec
        if self.rpc is None:
            return lookup_kind(kind)
        return foreign_kind(kind)

    def admit(self, spec: KindSpec, key: str) -> Redirect | Place | None:
        """Inbound, synchronous: serve here (``None``), redirect, or :data:`PLACE` (take
        the async path: :meth:`admit_async`)."""
        if spec.stateless:
            return None  # any member serves a stateless worker
        k = (spec.name, key)
        homes, directory = self.homes, self.directory
        tomb = directory.tombstones.get(k)
        if tomb is not None and not self.migrations.outlived(spec, key, tomb):
            return tomb.to, self.address(tomb.to)
        if spec.foreign:
            return self._admit_foreign(spec, key)
        if self.runtime.holds(spec, key):
            return PLACE if homes.leaving else None
        home = self.home(spec.name, key)
        if home is None:
            return None
        if home != self.self_name:
            return PLACE
        pin = directory.pins.get(k)
        if pin is not None:
            return None if pin == self.self_name else (pin, self.address(pin))
        return None if spec.hashed and not self.members.outdated(spec.name) else PLACE

    def _admit_foreign(self, spec: KindSpec, key: str) -> Redirect | Place:
        """A kind this member does not host: its home directs it, others send it home."""
        homes = self.homes
        home = self.home(spec.name, key)
        if home is None:
            raise no_member_hosts(spec.name)
        if home != self.self_name:
            return home, self.address(home)
        pin = self.directory.pins.get((spec.name, key))
        if pin is not None and pin != self.self_name and pin in homes.alive:
            return pin, self.address(pin)
        return PLACE

    def admitting(self, spec: KindSpec, key: str) -> bool:
        """Whether a frame for this agent is being admitted on the slow path."""
        return (spec.name, key) in self._admissions

    @contextlib.asynccontextmanager
    async def admission(self, spec: KindSpec, key: str) -> AsyncIterator[None]:
        """Admit frames for one agent one at a time, in arrival order (FIFO lock)."""
        k = (spec.name, key)
        entry = self._admissions.get(k)
        if entry is None:
            entry = self._admissions[k] = [asyncio.Lock(), 0]
        lock: asyncio.Lock = entry[0]
        entry[1] += 1
        try:
            async with lock:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._admissions[k]

    async def admit_async(self, spec: KindSpec, key: str, caller: str) -> Redirect | None:
        """Inbound, the slow cases: a leaving holder hands off first; the home places a
        policy agent; a node that is not the home claims the agent at the home."""
        k = (spec.name, key)
        homes, directory = self.homes, self.directory
        if self.runtime.holds(spec, key):
            if not homes.leaving:
                return None
            home = self.home(spec.name, key)
            if home is None or home == self.self_name:
                return None
            await self.migrations.migrate(spec, key, home, reason="leave")
        tomb = directory.tombstones.get(k)
        if tomb is not None and not self.migrations.outlived(spec, key, tomb):
            return tomb.to, self.address(tomb.to)
        if spec.foreign:
            where = self._admit_foreign(spec, key)
            if where is not PLACE:
                assert isinstance(where, tuple)
                return where
        home = self.home(spec.name, key)
        if home is None:
            return None
        if home == self.self_name:
            host = await directory.place(spec, key, caller)
            if host != self.self_name:
                return host, self.address(host)
            if spec.foreign:  # never run a kind whose code this member lacks
                raise no_member_hosts(spec.name)
            return None
        answer = await directory.claim(home, wire.Claim(spec.name, key, self.self_name))
        if answer.ok:
            directory.pinned_here.add(k)
            if spec.hashed:
                # Pinned at its home although hashed: moved here on purpose, or its
                # home lacks the kind's code. Either way it commits through the home.
                directory.proxied.add(k)
                if answer.foreign:
                    directory.stand_in.add(k)
            return None
        target = answer.host or home
        if target == self.self_name:  # the views disagree: let the home decide next time
            target = home
        return target, self.address(target)

    # ----------------------------------------------------------------- forwarding casts

    def forward_cast(self, spec: KindSpec, key: str, request_id: int, method: str,
                     payload: bytes, address: str, *, acked: bool = False,
                     ) -> asyncio.Future[None] | None:
        """Forward a cast for an agent hosted elsewhere (``forwarding.py``)."""
        return self.forwarder.forward_cast(spec, key, request_id, method, payload, address,
                                           acked=acked)

    def forwarding(self, spec: KindSpec, key: str) -> bool:
        return self.forwarder.forwarding(spec, key)

    async def forwarded(self, spec: KindSpec, key: str) -> None:
        await self.forwarder.forwarded(spec, key)  # the casts so far queued at the host

    def flush_request(self, spec: KindSpec, key: str) -> bytes:
        return wire.encode(wire.Locate(spec.name, key, self.self_name, False))

    # ----------------------------------------------------------------- what the runtime asks

    async def before_activate(self, spec: KindSpec, key: str) -> HandoffRecord | None:
        return await self.migrations.before_activate(spec, key)  # pull it (migration.py)

    def frozen(self, spec: KindSpec, key: str, to: str, record: HandoffRecord | None) -> None:
        self.migrations.frozen(spec, key, to, record)  # it stopped here (synchronously)

    async def migrate(self, spec: KindSpec, key: str, to: str, *, reason: str = "manual") -> None:
        """Move the agent to node ``to`` (``migration.py``).

        Raises:
            NodeUnavailable: ``to`` is not a live member, or a step did not answer.
        """
        await self.migrations.migrate(spec, key, to, reason=reason)

    async def remote_load(self, home: str, kind: str, key: str,
                          replicas: int = 3) -> Record | None:
        """The committed record of an agent hosted here, away from ``home``."""
        reply = await self.directory.client.call(
            home, "rload", wire.encode(wire.RemoteLoad(kind, key, self.self_name, replicas)))
        found = wire.decode(reply, wire.RemoteRecord)
        return Record(found.state, found.replies) if found.found else None

    async def remote_commit(self, home: str, kind: str, key: str, record: Record,
                            durability: str, replicas: int = 3) -> None:
        """Commit ``record`` of an agent hosted here through its ``home``, which leads
        the key's partition (it checks the directory names this node as the host)."""
        await self.directory.client.call(home, "rcommit", wire.encode(wire.RemoteCommit(
            kind, key, self.self_name, record.state, record.replies, durability, replicas)))

    # ----------------------------------------------------------------- lifecycle

    def sweep(self) -> None:
        """Drop expired tombstones (the passivation sweep calls this)."""
        self.directory.sweep()

    async def aclose(self) -> None:
        # Forwards and relays of messages queued here when their agent moved finish
        # first (bounded): cancelled, their senders would learn nothing but an error.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tasks.wait(), 1.0)
        self.tasks.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tasks.wait(), 1.0)
