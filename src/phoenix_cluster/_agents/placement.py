"""The placement service of one node: homes, the directory, handoff and migration.

The protocol is written in ``docs/design/migration.md``; this module implements it. In
short: every agent has a *home* (its partition's primary). Hash agents live there; agents
placed by a policy or moved on purpose have a *pin* in the home's directory. Moving an
agent is a *pull*: the new host asks the holder to release it; the holder freezes it at a
message boundary, answers with a :class:`HandoffRecord` (state, dedup window, queued
messages) and leaves a *tombstone* that redirects stragglers for ``tombstone_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from .._foundation.env import Clock
from .._placement.app_version import version_key
from .._placement.policies import NodeLoad, choose_host
from .._replication.types import Record
from .._ring.hashing import key_hash
from .._ring.partitions import PARTITIONS, partition_of, partition_point
from .._ring.ring import HashRing
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .._transport.rpc import RpcClient
from .._transport.tasks import TaskSet
from ..errors import AgentNotFound, NodeUnavailable, NotLeader, PhoenixError
from . import handoff as wire
from .agent import KindSpec, find_kind, foreign_kind, hosted_kinds, lookup_kind
from .capability import first_capable, newest_capable, no_member_hosts
from .flow import report_drop
from .handoff import HandoffRecord
from .mailbox import Message
from .reroute import PLACE, Place

if TYPE_CHECKING:
    from .._replication.service import Replicator
    from .dispatch import Router
    from .runtime import AgentRuntime

__all__ = ["PLACE", "PlacementService", "Tombstone"]

_log = logging.getLogger("phoenix_cluster.placement")

Key = tuple[str, str]
Redirect = tuple[str, str]
"""``(node name, address)`` a message should go to instead."""


MAX_ROUTES = 100_000
"""Learnt routes kept by a caller before the cache starts over."""


class Tombstone:
    """What a node keeps after handing an agent off: where it went, and the record."""

    __slots__ = ("expires", "record", "to")

    def __init__(self, to: str, record: HandoffRecord | None, expires: float) -> None:
        self.to = to
        self.record = record
        self.expires = expires


class _Forward:
    """A cast on its way to the agent's host; ``done`` settles for an acknowledged one."""

    __slots__ = ("address", "deliver", "done")

    def __init__(self, address: str, deliver: wire.Deliver,
                 done: asyncio.Future[None] | None) -> None:
        self.address = address
        self.deliver = deliver
        self.done = done


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
    ) -> None:
        self.runtime = runtime
        self.app_version = app_version
        self._version_key = version_key(app_version)
        self._outdated: dict[str, bool] = {}
        """Per kind, from the last load poll: a live member hosting it runs a newer
        application version than this one (new activations go there)."""
        self.rpc = rpc
        self.router: Router | None = None
        self.self_name = self_name
        self.clock = clock
        self.bus = bus
        self.fallback = fallback
        self.window_s = window_s
        self.tombstone_s = tombstone_s
        self.rpc_timeout_s = rpc_timeout_s
        self.ring: HashRing | None = None
        self.addresses: dict[str, str] = {}
        self.alive: frozenset[str] = frozenset()
        self._owners: list[str] | None = None
        self._prev_owners: list[str] | None = None
        self._solo_owners: list[str] | None = None
        self.changed_at = -1e18
        self.leaving = False
        self.tombstones: dict[Key, Tombstone] = {}
        self.pins: dict[Key, str] = {}
        """The directory: agents whose home is this node and whose host is ``pins[k]``."""
        self.pinned_here: set[Key] = set()
        """Agents hosted here with a pin at their home (re-registered on table changes)."""
        self.proxied: set[Key] = set()
        """Hash agents moved here off their home by ``migrate``: they commit their state
        through the home (policy-placed agents always do)."""
        self.stand_in: set[Key] = set()
        """Hash agents hosted here because their home does not host their kind (it lacks
        the code): they commit through the home and go to it once it hosts the kind."""
        self.excluded_kinds: frozenset[str] = frozenset()
        """Kinds defined in this process that this member does not host (nodes sharing
        one process in tests; a real member hosts every kind it imported)."""
        self.routes: dict[Key, str] = {}
        self._incoming: dict[Key, str] = {}
        self._loads: dict[str, NodeLoad] = {}
        self._loads_at = -1e18
        self._loads_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet(f"placement of {self_name}")
        """Relays of messages queued here when their agent moved, and load polls."""
        self._admissions: dict[Key, list[Any]] = {}
        self._forwarding: dict[Key, tuple[deque[_Forward], asyncio.Event]] = {}
        self.on_change: Callable[[], None] | None = None
        """Called after each table change (the rebalancer listens)."""
        self.migrations = 0
        self._stateless_turn = 0
        """Calls of stateless kinds this client spread over the members."""

    # ----------------------------------------------------------------- the view

    def update(self, ring: HashRing | None, addresses: dict[str, str]) -> None:
        """A new membership view: new homes, dead hosts' pins dropped, handoffs reclaimed."""
        self.addresses = addresses
        if ring is self.ring:
            return
        self.ring = ring
        self.alive = frozenset(ring.members) if ring is not None else frozenset()
        self._outdated.clear()
        self._prev_owners = self._owners
        self._owners = _owners(ring) if ring is not None else None
        self._solo_owners = None
        self.changed_at = self.clock.monotonic()
        self.routes.clear()
        for k, host in list(self.pins.items()):
            if host not in self.alive:
                del self.pins[k]
        self._reclaim()
        if self.rpc is not None and ring is not None and len(ring) > 1:
            # Members joined or left: learn their kinds and versions before deciding
            # where new activations go.
            self._loads_at = -1e18
            self._tasks.spawn(self._refresh_loads(), name="phx-placement-loads")
        if self.on_change is not None:
            self.on_change()

    def _reclaim(self) -> None:
        # A handoff whose target died before it could serve: take the agent back.
        for k, tomb in list(self.tombstones.items()):
            if tomb.to in self.alive or tomb.to == self.self_name:
                continue
            del self.tombstones[k]
            record = tomb.record
            if record is None or record.state is None:
                continue
            with contextlib.suppress(AgentNotFound):
                spec = lookup_kind(k[0])
                if not self.runtime.holds(spec, k[1]):
                    self.runtime.kind(spec).passive[k[1]] = record.state
                    if record.pinned:
                        self.pinned_here.add(k)
                    _log.warning("%s/%s: handoff target %s died; reclaimed the agent",
                                 k[0], k[1], tomb.to)

    def home(self, kind: str, key: str) -> str | None:
        """The agent's home (its partition's primary); ``None`` when no member is known."""
        owners = self._solo() if self.leaving else self._owners
        if owners is None:
            return None
        return owners[partition_of(key_hash(kind, key))]

    def _solo(self) -> list[str] | None:
        """Homes in the table without this node (what the others use once it left)."""
        if self._solo_owners is None:
            ring = self.ring
            if ring is None or self.self_name not in ring.members:
                self._solo_owners = self._owners
            elif len(ring.members) > 1:
                self._solo_owners = _owners(ring.without_member(self.self_name))
        return self._solo_owners

    def address(self, name: str) -> str:
        address = self.addresses.get(name)
        if not address:
            raise NodeUnavailable(f"no address known for node {name!r}", definite=True)
        return address

    # ----------------------------------------------------------------- routing

    def route(self, spec: KindSpec, key: str) -> str | Place | None:
        """Where a message sent from this node goes: an address, ``None`` (here) or
        :data:`PLACE` (this node is the home and must choose a host first)."""
        if spec.stateless:
            return self._stateless_route(spec, key)
        k = (spec.name, key)
        tomb = self.tombstones.get(k)
        if tomb is not None:
            return self.address(tomb.to)
        if spec.name in self.excluded_kinds:
            spec = foreign_kind(spec.name)
        if not self.leaving and self.runtime.holds(spec, key):
            return None
        learnt = self.routes.get(k)
        if learnt is not None and learnt in self.alive:
            return None if learnt == self.self_name else self.address(learnt)
        home = self.home(spec.name, key)
        if home is None:
            return self.fallback(spec.name, key)
        if home != self.self_name:
            return self.address(home)
        pin = self.pins.get(k)
        if pin is not None:
            return None if pin == self.self_name else self.address(pin)
        return None if spec.hashed and not self.outdated(spec.name) else PLACE

    def _stateless_route(self, spec: KindSpec, key: str) -> str | None:
        """A stateless worker is served here on a member; a client spreads its calls
        over the members in turn (a leaving member's callers go elsewhere too)."""
        if self.runtime.hosts_agents and not self.leaving:
            return None
        hosts = sorted(self.alive - {self.self_name})
        if not hosts:
            return self.fallback(spec.name, key)
        self._stateless_turn += 1
        return self.address(hosts[self._stateless_turn % len(hosts)])

    async def resolve(self, spec: KindSpec, key: str) -> str | None:
        """Finish :meth:`route`'s :data:`PLACE`: choose and pin a host; its address or None."""
        if spec.name in self.excluded_kinds:
            spec = foreign_kind(spec.name)
        host = await self._place(spec, key, self.self_name)
        if host == self.self_name and spec.foreign:
            raise no_member_hosts(spec.name)
        return None if host == self.self_name else self.address(host)

    def learn(self, spec: KindSpec, key: str, host: str) -> None:
        """Remember where a redirect said the agent lives."""
        if len(self.routes) >= MAX_ROUTES:
            self.routes.clear()
        self.routes[(spec.name, key)] = host

    def forget(self, spec: KindSpec, key: str) -> None:
        self.routes.pop((spec.name, key), None)

    def spec_for(self, kind: str) -> KindSpec:
        """The spec of an inbound message's kind: a :func:`foreign_kind` stand-in when
        this member does not host it (it directs the agent to a member that does).

        Raises:
            AgentNotFound: an unknown kind on a node outside any cluster.
        """
        spec = find_kind(kind)
        if spec is not None and kind not in self.excluded_kinds:
            return spec
        if self.rpc is None:
            return lookup_kind(kind)
        return foreign_kind(kind)

    def hosts(self, kind: str) -> bool:
        """Whether this member runs agents of ``kind``."""
        return find_kind(kind) is not None and kind not in self.excluded_kinds

    def admit(self, spec: KindSpec, key: str) -> Redirect | Place | None:
        """Inbound, synchronous: serve here (``None``), redirect, or :data:`PLACE` (take
        the async path: :meth:`admit_async`)."""
        if spec.stateless:
            return None  # any member serves a stateless worker
        k = (spec.name, key)
        tomb = self.tombstones.get(k)
        if tomb is not None:
            return tomb.to, self.address(tomb.to)
        if spec.foreign:
            return self._admit_foreign(spec, key)
        if self.runtime.holds(spec, key):
            return PLACE if self.leaving else None
        home = self.home(spec.name, key)
        if home is None:
            return None
        if home != self.self_name:
            return PLACE
        pin = self.pins.get(k)
        if pin is not None:
            return None if pin == self.self_name else (pin, self.address(pin))
        return None if spec.hashed and not self.outdated(spec.name) else PLACE

    def _admit_foreign(self, spec: KindSpec, key: str) -> Redirect | Place:
        """A kind this member does not host: its home directs it, others send it home."""
        home = self.home(spec.name, key)
        if home is None:
            raise no_member_hosts(spec.name)
        if home != self.self_name:
            return home, self.address(home)
        pin = self.pins.get((spec.name, key))
        if pin is not None and pin != self.self_name and pin in self.alive:
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
        if self.runtime.holds(spec, key):
            if not self.leaving:
                return None
            home = self.home(spec.name, key)
            if home is None or home == self.self_name:
                return None
            await self.migrate(spec, key, home, reason="leave")
        tomb = self.tombstones.get(k)
        if tomb is not None:
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
            host = await self._place(spec, key, caller)
            if host != self.self_name:
                return host, self.address(host)
            if spec.foreign:  # never run a kind whose code this member lacks
                raise no_member_hosts(spec.name)
            return None
        answer = await self._claim(home, wire.Claim(spec.name, key, self.self_name))
        if answer.ok:
            self.pinned_here.add(k)
            if spec.hashed:
                # Pinned at its home although hashed: moved here on purpose, or its
                # home lacks the kind's code. Either way it commits through the home.
                self.proxied.add(k)
                if answer.foreign:
                    self.stand_in.add(k)
            return None
        target = answer.host or home
        if target == self.self_name:  # the views disagree: let the home decide next time
            target = home
        return target, self.address(target)

    # ----------------------------------------------------------------- forwarding casts

    def forward_cast(self, spec: KindSpec, key: str, request_id: int, method: str,
                     payload: bytes, address: str, *, acked: bool = False,
                     ) -> asyncio.Future[None] | None:
        """Forward a cast for an agent hosted elsewhere, in arrival order per agent.

        Each forward is acknowledged once queued at the host before the next one goes,
        and a call redirected away from here first waits for the forwards before it
        (:meth:`forwarded`), so a sender that follows the redirect cannot overtake its
        own earlier casts.

        With ``acked`` the returned future settles once the host queued the cast, or
        with the error that stopped it (for the sender's acknowledgement); without, a
        cast the host refused is reported as dropped.
        """
        k = (spec.name, key)
        channel = self._forwarding.get(k)
        if channel is None:
            channel = self._forwarding[k] = (deque(), asyncio.Event())
            self._spawn(self._drain_forwards(k, channel))
        done = asyncio.get_running_loop().create_future() if acked else None
        channel[0].append(_Forward(address, wire.Deliver(spec.name, key, method, payload,
                                                         request_id), done))
        return done

    def forwarding(self, spec: KindSpec, key: str) -> bool:
        return (spec.name, key) in self._forwarding

    async def forwarded(self, spec: KindSpec, key: str) -> None:
        """Wait until the casts forwarded so far for this agent are queued at its host."""
        channel = self._forwarding.get((spec.name, key))
        if channel is not None:
            await channel[1].wait()

    def flush_request(self, spec: KindSpec, key: str) -> bytes:
        return wire.encode(wire.Locate(spec.name, key, self.self_name, False))

    async def _drain_forwards(
        self, k: Key, channel: tuple[deque[_Forward], asyncio.Event],
    ) -> None:
        queue, done = channel
        rpc = self.rpc
        assert rpc is not None
        try:
            while queue:
                forward = queue[0]
                deliver, acked = forward.deliver, forward.done
                try:
                    await rpc.call(forward.address, "placement", "deliver",
                                   wire.encode(deliver), self.rpc_timeout_s)
                except PhoenixError as exc:
                    if acked is None:
                        report_drop(self.bus, self.self_name, "forward_failed", k[0], k[1],
                                    deliver.method, f"forwarded to {forward.address}: "
                                    f"{exc.message}")
                    elif not acked.done():
                        acked.set_exception(exc)
                else:
                    if acked is not None and not acked.done():
                        acked.set_result(None)
                queue.popleft()
        finally:
            for forward in queue:  # cancelled (the node stops): the senders learn it
                if forward.done is not None and not forward.done.done():
                    forward.done.set_exception(NodeUnavailable(
                        f"node {self.self_name} stopped while forwarding the cast",
                        definite=True))
            del self._forwarding[k]
            done.set()

    async def _deliver(self, deliver: wire.Deliver) -> None:
        """A cast forwarded here: queue it (waiting for room), or pass it on; answer
        only once it is queued, so the forwarder (and the sender) learn of a refusal."""
        spec = self.spec_for(deliver.kind)
        passed_on: asyncio.Future[None] | None = None
        async with self.admission(spec, deliver.key):
            where = self.admit(spec, deliver.key)
            if where is PLACE:
                where = await self.admit_async(spec, deliver.key, "")
            if isinstance(where, tuple):
                passed_on = self.forward_cast(spec, deliver.key, deliver.request_id,
                                              deliver.method, deliver.payload, where[1],
                                              acked=True)
            else:
                await self.runtime.submit_cast(spec, deliver.key, deliver.method,
                                               deliver.payload, deliver.request_id,
                                               self.rpc_timeout_s / 2)
        if passed_on is not None:
            await passed_on

    # ----------------------------------------------------------------- directory

    async def _place(self, spec: KindSpec, key: str, caller: str) -> str:
        """At the home: the agent's host, choosing and pinning one by policy if needed."""
        k = (spec.name, key)
        pin = self.pins.get(k)
        if pin is not None:
            return pin
        if spec.hashed and not self.outdated(spec.name):
            return self.self_name
        loads = await self.loads()
        if spec.foreign or spec.hashed:
            # A home without the kind's code, or of an older application version.
            assert self.ring is not None
            chosen = first_capable(self.ring, loads, self.alive, spec.name, key)
        else:
            newest, _ = newest_capable(loads, self.alive, spec.name)
            hosts = [load for load in loads.values()
                     if load.name in self.alive and load.hosts(spec.name)
                     and (load.name in newest or load.kinds is None)]
            if not hosts:
                return self.self_name
            chosen = choose_host(spec.placement, hosts, key=key, caller=caller,
                                 tie=key_hash(spec.name, key) & 0xFFFF)
        pin = self.pins.setdefault(k, chosen)  # a concurrent placement may have won
        if pin == chosen:
            load = loads[chosen]
            loads[chosen] = msgspec.structs.replace(load, active_agents=load.active_agents + 1)
        if pin == self.self_name and not spec.hashed:
            self.pinned_here.add(k)
        return pin

    def _claim_here(self, claim: wire.Claim) -> wire.ClaimReply:
        k = (claim.kind, claim.key)
        home = self.home(claim.kind, claim.key)
        if home is not None and home != self.self_name:
            return wire.ClaimReply(False, home)
        pin = self.pins.get(k)
        if claim.unpin:
            if pin == claim.host:
                del self.pins[k]
            return wire.ClaimReply(True, "")
        foreign = not self.hosts(claim.kind) or self.outdated(claim.kind)
        if claim.force or pin == claim.host:
            self.pins[k] = claim.host
            return wire.ClaimReply(True, claim.host, foreign)
        if pin is None:
            spec = self.spec_for(claim.kind)
            if not spec.hashed:
                self.pins[k] = claim.host
                return wire.ClaimReply(True, claim.host, foreign)
            return wire.ClaimReply(False, "")
        return wire.ClaimReply(False, pin)

    async def _claim(self, home: str, claim: wire.Claim) -> wire.ClaimReply:
        if home == self.self_name:
            return self._claim_here(claim)
        reply = await self._rpc(home, "claim", wire.encode(claim))
        return wire.decode(reply, wire.ClaimReply)

    async def locate(self, spec: KindSpec, key: str) -> str:
        """The node that holds (or will host) the agent, asking its home."""
        if spec.name in self.excluded_kinds:
            spec = foreign_kind(spec.name)
        if self.runtime.holds(spec, key):
            return self.self_name
        home = self.home(spec.name, key)
        if home is None:
            raise NodeUnavailable(f"no member can host {spec.name}/{key}", definite=True)
        if home == self.self_name:
            pin = self.pins.get((spec.name, key))
            if pin is None and spec.foreign:
                pin = await self._place(spec, key, self.self_name)
            return pin or self.self_name
        reply = await self._rpc(home, "locate",
                                wire.encode(wire.Locate(spec.name, key, self.self_name, False)))
        return wire.decode(reply, wire.LocateReply).host or home

    # ----------------------------------------------------------------- loads

    async def loads(self) -> dict[str, NodeLoad]:
        """Every hosting member's load, polled at most once a second."""
        if self.clock.monotonic() - self._loads_at > 1.0:
            task = self._loads_task
            if task is None or task.done():
                task = self._loads_task = self._tasks.spawn(self._poll_loads(),
                                                             name="phx-placement-loads")
            await asyncio.shield(task)
        return self._loads

    async def _refresh_loads(self) -> None:
        with contextlib.suppress(PhoenixError):
            await self.loads()

    async def upgrade_target(self, spec: KindSpec, key: str) -> str | None:
        """Where an agent goes when a newer application version hosts its kind: the
        first member of the newest version clockwise from its partition."""
        loads = await self.loads()
        if self.ring is None:
            return None
        try:
            return first_capable(self.ring, loads, self.alive, spec.name, key)
        except AgentNotFound:
            return None

    def outdated(self, kind: str) -> bool:
        """Whether a live member that hosts ``kind`` runs a newer application version
        than this one (from the last load poll): new activations go there."""
        known = self._outdated.get(kind)
        if known is None:
            _, newest = newest_capable(self._loads, self.alive, kind)
            known = self._outdated[kind] = newest > self._version_key
        return known

    async def _poll_loads(self) -> None:
        async def one(name: str) -> NodeLoad | None:
            if name == self.self_name:
                return self.local_load()
            started = self.clock.monotonic()
            try:
                reply = await self._rpc(name, "load", b"", timeout_s=0.5)
            except PhoenixError:
                return None
            load = wire.decode(reply, NodeLoad)
            return msgspec.structs.replace(load, rtt_s=self.clock.monotonic() - started)

        names = sorted(self.alive)
        results = await asyncio.gather(*(one(n) for n in names))
        previous = self._loads
        # A member too busy to answer in time keeps its last report rather than
        # vanishing from the choice (which would send every new agent elsewhere).
        loads: dict[str, NodeLoad] = {}
        for name, load in zip(names, results, strict=True):
            known = load or previous.get(name)
            if known is not None:
                loads[name] = known
        self._loads = loads
        self._loads_at = self.clock.monotonic()
        self._outdated.clear()

    def local_load(self) -> NodeLoad:
        stats = self.runtime.load()
        kinds = tuple(n for n in hosted_kinds() if n not in self.excluded_kinds)
        return NodeLoad(self.self_name, stats[0], stats[1], stats[2], kinds=kinds,
                        app_version=self.app_version)

    async def home_hosts(self, kind: str, home: str) -> bool:
        """Whether member ``home`` runs ``kind`` itself: it reports hosting the kind, at
        the newest application version among the members that do (polled loads)."""
        loads = await self.loads()
        if home == self.self_name:
            return self.hosts(kind) and not self.outdated(kind)
        load = loads.get(home)
        if load is None or not load.hosts(kind):
            return False
        _, newest = newest_capable(loads, self.alive, kind)
        return version_key(load.app_version) >= newest

    # ----------------------------------------------------------------- handoff

    async def before_activate(self, spec: KindSpec, key: str) -> HandoffRecord | None:
        """Before a fresh activation here: pull the agent from whoever may still hold it.

        Raises:
            NodeUnavailable: a possible holder is alive but did not answer (definite:
                nothing ran; activating now could make a second copy).
        """
        k = (spec.name, key)
        holder = self._incoming.pop(k, None)
        candidates = [holder] if holder is not None else self._candidates(spec, key)
        for name in candidates:
            try:
                reply = await self._rpc(name, "release",
                                        wire.encode(wire.Release(spec.name, key, self.self_name)))
            except PhoenixError as exc:
                raise NodeUnavailable(
                    f"{spec.name}/{key}: {name} may still hold this agent and did not "
                    f"answer its release ({exc.message})", definite=True) from exc
            record = wire.decode(reply, wire.ReleaseReply).record
            if record is not None:
                if record.pinned or not spec.hashed:
                    self.pinned_here.add(k)
                await self._pin_at_home(spec, key)
                return record
        if holder is not None:
            await self._pin_at_home(spec, key)
        return None

    async def _pin_at_home(self, spec: KindSpec, key: str) -> None:
        """A handed-over agent that will live here, off its home: move its pin first, so
        the home lets this node load and commit it (the old holder is frozen by now)."""
        k = (spec.name, key)
        home = self.home(spec.name, key)
        if (k not in self.pinned_here or (spec.hashed and k not in self.proxied)
                or home is None or home == self.self_name):
            return
        try:
            await self._claim(home, wire.Claim(spec.name, key, self.self_name, force=True))
        except PhoenixError as exc:
            raise NodeUnavailable(f"{spec.name}/{key}: its home {home} did not take the new "
                                  f"host ({exc.message})", definite=True) from exc

    def _candidates(self, spec: KindSpec, key: str) -> list[str]:
        if self.clock.monotonic() - self.changed_at > self.window_s:
            return []
        p = partition_of(key_hash(spec.name, key))
        found: list[str] = []
        for owners in (self._prev_owners, self._solo()):
            if owners is not None:
                name = owners[p]
                if name != self.self_name and name in self.alive and name not in found:
                    found.append(name)
        return found

    def frozen(self, spec: KindSpec, key: str, to: str, record: HandoffRecord | None) -> None:
        """Called by the runtime the moment the agent stopped here (synchronously)."""
        k = (spec.name, key)
        if record is not None and k in self.pinned_here:
            record = msgspec.structs.replace(record, pinned=True)
        self.pinned_here.discard(k)
        self.proxied.discard(k)
        self.stand_in.discard(k)
        self.tombstones[k] = Tombstone(to, record, self.clock.monotonic() + self.tombstone_s)

    async def release(self, request: wire.Release) -> wire.ReleaseReply:
        """Holder side of a pull: freeze the agent and hand over its record."""
        k = (request.kind, request.key)
        tomb = self.tombstones.get(k)
        if tomb is not None and tomb.to == request.to:
            return wire.ReleaseReply(tomb.record, tomb.record is not None)
        if request.to == self.self_name or not self.hosts(request.kind):
            return wire.ReleaseReply(None, False)  # a kind not hosted here: held nowhere here
        spec = lookup_kind(request.kind)
        self._incoming.pop(k, None)
        waiters = await self.runtime.freeze(spec, request.key, request.to)
        tomb = self.tombstones.get(k)
        record = tomb.record if tomb is not None else None
        if waiters:
            self._spawn(self._forward(spec, request.key, request.to, waiters))
        return wire.ReleaseReply(record, record is not None)

    async def _forward(self, spec: KindSpec, key: str, to: str, waiters: list[Message]) -> None:
        """Relay the answers of calls that were queued here when the agent moved."""
        router = self.router
        assert router is not None
        address = self.address(to)

        async def one(msg: Message) -> None:
            future = msg.future
            assert future is not None
            remaining = msg.deadline - self.clock.monotonic()
            try:
                reply = await router.call_raw(spec, key, msg.method, msg.payload,
                                              max(remaining, 0.001), msg.request_id, address)
            except PhoenixError as exc:
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(reply)

        await asyncio.gather(*(one(m) for m in waiters))

    async def adopt(self, request: wire.Adopt) -> None:
        """Target side of a migration: pull the agent from its holder and host it here."""
        spec = lookup_kind(request.kind)
        k = (request.kind, request.key)
        started = self.clock.monotonic()
        if not self.runtime.holds(spec, request.key):
            # It may come back to us: our old tombstone must not redirect it away.
            self.tombstones.pop(k, None)
            if request.holder != self.self_name:
                self._incoming[k] = request.holder
            home = self.home(spec.name, request.key)
            if not (spec.hashed and home == self.self_name):
                # Hosted off its home: pinned from the start, so its activation here
                # neither pulls from nor elects over the home's replicas.
                self.pinned_here.add(k)
                if request.reason in ("manual", "upgrade"):
                    self.proxied.add(k)  # it stays here: commit through the home
            try:
                await self.runtime.ensure_active(spec, request.key)
            finally:
                self._incoming.pop(k, None)
        home = self.home(spec.name, request.key)
        if home is not None:
            if spec.hashed and home == self.self_name:
                self.pins.pop(k, None)
                self.pinned_here.discard(k)
                self.proxied.discard(k)
            else:
                self.pinned_here.add(k)
                reply = await self._claim(home, wire.Claim(spec.name, request.key,
                                                           self.self_name, force=True))
                if spec.hashed and reply.foreign:
                    self.proxied.add(k)  # its home does not run it: stand in for it
                    self.stand_in.add(k)
        self.migrations += 1
        if self.bus.has_handlers(events.AGENT_MIGRATED):
            self.bus.execute(
                events.AGENT_MIGRATED,
                {"duration": self.clock.monotonic() - started},
                {"node": self.self_name, "kind": spec.name, "key": request.key,
                 "from": request.holder, "to": self.self_name, "reason": request.reason},
            )

    async def migrate(self, spec: KindSpec, key: str, to: str, *, reason: str = "manual") -> None:
        """Move the agent to node ``to`` (see ``docs/design/migration.md``).

        Raises:
            NodeUnavailable: ``to`` is not a live member, or a step did not answer.
        """
        if to not in self.alive:
            raise NodeUnavailable(f"cannot migrate {spec.name}/{key} to {to!r}: not a live "
                                  f"member (members: {', '.join(sorted(self.alive))})",
                                  definite=True)
        holder = await self.locate(spec, key)
        if holder == to and self.runtime.holds(spec, key) == (to == self.self_name):
            return
        request = wire.Adopt(spec.name, key, holder, reason)
        if to == self.self_name:
            await self.adopt(request)
        else:
            await self._rpc(to, "adopt", wire.encode(request), timeout_s=2 * self.rpc_timeout_s)

    # ----------------------------------------------------------------- service

    async def handle(self, method: str, payload: bytes) -> bytes:
        """The ``$placement`` service peers call."""
        try:
            if method == "release":
                return wire.encode(await self.release(wire.decode(payload, wire.Release)))
            if method == "adopt":
                await self.adopt(wire.decode(payload, wire.Adopt))
                return b""
            if method == "claim":
                return wire.encode(self._claim_here(wire.decode(payload, wire.Claim)))
            if method == "locate":
                request = wire.decode(payload, wire.Locate)
                spec = self.spec_for(request.kind)
                if self.runtime.holds(spec, request.key):
                    return wire.encode(wire.LocateReply(self.self_name))
                host = self.pins.get((request.kind, request.key), "")
                if not host and (request.place or spec.foreign) and not spec.hashed:
                    host = await self._place(spec, request.key, request.caller)
                return wire.encode(wire.LocateReply(host))
            if method == "load":
                return wire.encode(self.local_load())
            if method == "rload":
                return wire.encode(await self._remote_load(
                    wire.decode(payload, wire.RemoteLoad)))
            if method == "rcommit":
                await self._remote_commit(wire.decode(payload, wire.RemoteCommit))
                return b""
            if method == "flush":
                request = wire.decode(payload, wire.Locate)
                await self.forwarded(self.spec_for(request.kind), request.key)
                return b""
            if method == "deliver":
                await self._deliver(wire.decode(payload, wire.Deliver))
                return b""
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            from ..errors import ProtocolError

            raise ProtocolError(f"malformed $placement.{method} request: {exc}") from exc
        raise AgentNotFound(f"node {self.self_name} has no placement method {method!r}")

    # ----------------------------------------------------------------- remote replication

    async def remote_load(self, home: str, kind: str, key: str) -> Record | None:
        """The committed record of an agent hosted here, away from ``home``."""
        reply = await self._rpc(home, "rload",
                                wire.encode(wire.RemoteLoad(kind, key, self.self_name)))
        found = wire.decode(reply, wire.RemoteRecord)
        return Record(found.state, found.replies) if found.found else None

    async def remote_commit(self, home: str, kind: str, key: str, record: Record,
                            durability: str) -> None:
        """Commit ``record`` of an agent hosted here through its ``home``, which leads
        the key's partition (it checks the directory names this node as the host)."""
        await self._rpc(home, "rcommit", wire.encode(wire.RemoteCommit(
            kind, key, self.self_name, record.state, record.replies, durability)))

    def _home_replicator(self, kind: str, key: str, host: str) -> Replicator:
        """At the home: the replicator ``host`` may load and commit ``kind/key`` through,
        if the directory names it the host.

        Raises:
            NotLeader: this node is not the key's home, replicates nothing, or ``host``
                is not the agent's host (definite: nothing was read or stored; the host
                stops the agent).
        """
        spec = self.spec_for(kind)
        k = (kind, key)
        home = self.home(kind, key)
        if home != self.self_name:
            raise NotLeader(f"node {self.self_name} is not the home of {kind}/{key} "
                            f"(the home is {home})", definite=True)
        pin = self.pins.get(k)
        if pin is None and not spec.hashed and host in self.alive:
            pin = self.pins[k] = host  # a policy agent placed before this home took over
        if pin != host:
            raise NotLeader(f"{kind}/{key} is hosted by {pin or self.self_name}, not {host}",
                            definite=True)
        replicator = self.runtime.replicator
        if replicator is None:
            raise NotLeader(f"node {self.self_name} replicates nothing", definite=True)
        return replicator

    async def _remote_load(self, request: wire.RemoteLoad) -> wire.RemoteRecord:
        replicator = self._home_replicator(request.kind, request.key, request.host)
        record = await replicator.load(request.kind, request.key)
        if record is None:
            return wire.RemoteRecord(False)
        return wire.RemoteRecord(True, record.state, record.replies)

    async def _remote_commit(self, request: wire.RemoteCommit) -> None:
        replicator = self._home_replicator(request.kind, request.key, request.host)
        await replicator.commit(request.kind, request.key,
                                Record(request.state, request.replies),
                                "async" if request.durability == "async" else "quorum")

    async def _rpc(self, name: str, method: str, payload: bytes,
                   timeout_s: float | None = None) -> bytes:
        rpc = self.rpc
        if rpc is None:
            raise NodeUnavailable("this node has no cluster transport", definite=True)
        return await rpc.call(self.address(name), "placement", method, payload,
                              timeout_s or self.rpc_timeout_s)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro, name="phx-placement-relay")

    def sweep(self) -> None:
        """Drop expired tombstones (the passivation sweep calls this)."""
        now = self.clock.monotonic()
        for k, tomb in list(self.tombstones.items()):
            if tomb.expires <= now:
                del self.tombstones[k]

    async def aclose(self) -> None:
        # Relays of calls and casts that were queued here when their agent moved finish
        # first (bounded): cancelled, their senders would learn nothing but an error.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tasks.wait(), 1.0)
        self._tasks.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tasks.wait(), 1.0)


def _owners(ring: HashRing) -> list[str]:
    """The home of every partition: the ring owner of the partition's point."""
    return [ring.owner(partition_point(p)) for p in range(PARTITIONS)]
