"""The directory: which member hosts an agent that does not live at its home.

Hash agents live at their home. Agents placed by a policy, moved on purpose, or standing
in for a home that lacks their kind have a *pin* in the home's directory
(``docs/design/migration.md``). The home answers *claims* (may this member host the
agent?) and *locates* (where does it live?), and chooses a host by the kind's policy the
first time. Callers remember where redirects sent them (learnt routes), and a member that
handed an agent off keeps a :class:`Tombstone` that redirects stragglers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from .._placement.policies import choose_host
from .._ring.hashing import key_hash
from ..errors import NodeUnavailable
from . import handoff as wire
from .capability import first_capable, newest_capable
from .handoff import HandoffRecord
from .home_table import HomeTable
from .kinds import KindSpec
from .member_loads import MemberLoads

__all__ = ["MAX_ROUTES", "Directory", "Key", "Tombstone"]

_log = logging.getLogger("phoenix_cluster.agents")

Key = tuple[str, str]

MAX_ROUTES = 100_000
"""Learnt routes kept by a caller before the cache starts over."""


class Tombstone:
    """What a node keeps after handing an agent off: where it went, and the record."""

    __slots__ = ("as_home", "expires", "record", "to")

    def __init__(self, to: str, record: HandoffRecord | None, expires: float) -> None:
        self.to = to
        self.record = record
        self.expires = expires
        self.as_home = False
        """``to`` pulled the agent as its home, rather than receiving it in a migration."""


class Directory:
    """Pins at this home, agents pinned here, tombstones and learnt routes.

    Args:
        homes: the node's view of the members.
        members: the members' kinds and loads (policy and capability choices).
        holds: whether this node holds an agent (active or passivated).
        client: calls other homes' ``$placement`` service.
    """

    def __init__(self, homes: HomeTable, members: MemberLoads,
                 holds: Callable[[KindSpec, str], bool], client: wire.PlacementClient) -> None:
        self.homes = homes
        self.members = members
        self.holds = holds
        self.client = client
        self.self_name = homes.self_name
        self.pins: dict[Key, str] = {}
        """Agents whose home is this node and whose host is ``pins[k]``."""
        self.pinned_here: set[Key] = set()
        """Agents hosted here with a pin at their home (re-registered on table changes)."""
        self.proxied: set[Key] = set()
        """Hash agents moved here off their home by ``migrate``: they commit their state
        through the home (policy-placed agents always do)."""
        self.stand_in: set[Key] = set()
        """Hash agents hosted here because their home does not host their kind (it lacks
        the code): they commit through the home and go to it once it hosts the kind."""
        self.tombstones: dict[Key, Tombstone] = {}
        self.routes: dict[Key, str] = {}
        """Where redirects said agents live (this node as a caller)."""

    def view_changed(self) -> None:
        """New homes: learnt routes are stale, and dead hosts' pins go."""
        self.routes.clear()
        alive = self.homes.alive
        for k, host in list(self.pins.items()):
            if host not in alive:
                del self.pins[k]

    def learn(self, spec: KindSpec, key: str, host: str) -> None:
        """Remember where a redirect said the agent lives."""
        if len(self.routes) >= MAX_ROUTES:
            self.routes.clear()
        self.routes[(spec.name, key)] = host

    def forget(self, spec: KindSpec, key: str) -> None:
        self.routes.pop((spec.name, key), None)

    def sweep(self) -> None:
        """Drop expired tombstones."""
        now = self.homes.clock.monotonic()
        for k, tomb in list(self.tombstones.items()):
            if tomb.expires <= now:
                del self.tombstones[k]

    # ----------------------------------------------------------------- at the home

    async def place(self, spec: KindSpec, key: str, caller: str) -> str:
        """At the home: the agent's host, choosing and pinning one by policy if needed."""
        k = (spec.name, key)
        pin = self.pins.get(k)
        if pin is not None:
            return pin
        members = self.members
        if spec.hashed and not members.outdated(spec.name):
            return self.self_name
        loads = await members.loads()
        alive = self.homes.alive
        if spec.foreign or spec.hashed:
            # A home without the kind's code, or of an older application version.
            assert self.homes.ring is not None
            chosen = first_capable(self.homes.ring, loads, alive, spec.name, key)
        else:
            newest, _ = newest_capable(loads, alive, spec.name)
            hosts = [load for load in loads.values()
                     if load.name in alive and load.hosts(spec.name)
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

    def claim_here(self, claim: wire.Claim) -> wire.ClaimReply:
        """At the home: may ``claim.host`` host the agent (or move its pin there)?"""
        k = (claim.kind, claim.key)
        home = self.homes.home(claim.kind, claim.key)
        if home is not None and home != self.self_name:
            return wire.ClaimReply(False, home)
        pin = self.pins.get(k)
        if claim.unpin:
            if pin == claim.host:
                del self.pins[k]
            return wire.ClaimReply(True, "")
        tomb = self.tombstones.get(k)
        if (tomb is not None and tomb.to == claim.host and pin != claim.host
                and self.members.spec_for(claim.kind).commits_replies):
            # The node this home handed the agent to asks to host it, so it no longer
            # holds it (a replicated agent's activation goes when its partition's lead
            # moves). Following the tombstone would send callers there and back, as
            # neither holds the agent, until it expired (60 s): drop it; the agent is
            # served here, from what its replicas committed. (An agent whose state
            # lives nowhere else keeps its tombstone: its record may be that state.)
            del self.tombstones[k]
            _log.info("%s/%s: %s, which this home handed it to, no longer holds it; "
                      "serving it here", claim.kind, claim.key, claim.host)
        members = self.members
        foreign = not members.hosts(claim.kind) or members.outdated(claim.kind)
        if claim.force or pin == claim.host:
            self.pins[k] = claim.host
            return wire.ClaimReply(True, claim.host, foreign)
        if pin is None:
            spec = members.spec_for(claim.kind)
            if not spec.hashed:
                self.pins[k] = claim.host
                return wire.ClaimReply(True, claim.host, foreign)
            return wire.ClaimReply(False, "")
        return wire.ClaimReply(False, pin)

    async def claim(self, home: str, claim: wire.Claim) -> wire.ClaimReply:
        """Ask ``home`` (maybe this node) to let ``claim.host`` host the agent."""
        if home == self.self_name:
            return self.claim_here(claim)
        reply = await self.client.call(home, "claim", wire.encode(claim))
        return wire.decode(reply, wire.ClaimReply)

    async def locate(self, spec: KindSpec, key: str) -> str:
        """The node that holds (or will host) the agent, asking its home."""
        spec = self.members.standing_in(spec)
        if self.holds(spec, key):
            return self.self_name
        home = self.homes.home(spec.name, key)
        if home is None:
            raise NodeUnavailable(f"no member can host {spec.name}/{key}", definite=True)
        if home == self.self_name:
            pin = self.pins.get((spec.name, key))
            if pin is None and spec.foreign:
                pin = await self.place(spec, key, self.self_name)
            return pin or self.self_name
        reply = await self.client.call(
            home, "locate", wire.encode(wire.Locate(spec.name, key, self.self_name, False)))
        return wire.decode(reply, wire.LocateReply).host or home

    async def answer_locate(self, request: wire.Locate) -> wire.LocateReply:
        """At the home (``$placement.locate``): the agent's host, placing it if asked."""
        spec = self.members.spec_for(request.kind)
        if self.holds(spec, request.key):
            return wire.LocateReply(self.self_name)
        host = self.pins.get((request.kind, request.key), "")
        if not host and (request.place or spec.foreign) and not spec.hashed:
            host = await self.place(spec, request.key, request.caller)
        return wire.LocateReply(host)
