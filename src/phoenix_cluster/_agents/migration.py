"""Moving an agent between members: the pull, the freeze and the adoption.

The protocol is written in ``docs/design/migration.md``. Moving an agent is a *pull*:
the new host asks the holder to release it (``$placement.release``); the holder freezes
it at a message boundary, answers with a :class:`HandoffRecord` (state, dedup window,
queued messages) and leaves a tombstone that redirects stragglers for ``tombstone_s``.
A fresh activation pulls the same way from whoever may still hold the agent after a
table change; a target that died before it served is reclaimed by the old holder.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import msgspec

from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from ..errors import AgentNotFound, NodeUnavailable, PhoenixError
from . import handoff as wire
from .directory import Directory, Key, Tombstone
from .handoff import HandoffRecord
from .kinds import KindSpec, lookup_kind
from .mailbox import Message

if TYPE_CHECKING:
    from .runtime import AgentRuntime

__all__ = ["Migrations"]

_log = logging.getLogger("phoenix_cluster.placement")


class Migrations:
    """Pulls, handoffs and adoptions of agents for one node.

    Args:
        runtime: the node's agent runtime (holds, freezes and activates agents).
        directory: pins, tombstones and claims (and the view of the members).
        bus: telemetry (``AGENT_MIGRATED``).
        tombstone_s: how long a handed-off agent's tombstone redirects.
    """

    def __init__(self, runtime: AgentRuntime, directory: Directory, bus: TelemetryBus,
                 tombstone_s: float) -> None:
        self.runtime = runtime
        self.directory = directory
        self.homes = directory.homes
        self.client = directory.client
        self.self_name = directory.self_name
        self.clock = directory.homes.clock
        self.bus = bus
        self.tombstone_s = tombstone_s
        self.count = 0
        """Agents adopted here."""
        self._incoming: dict[Key, str] = {}
        """Agents being adopted here: the holder to pull each from."""

    def reclaim(self) -> None:
        """A handoff whose target died before it could serve: take the agent back.

        Only an agent whose state lives nowhere else (``durability="none"``, crdt
        kinds): a replicated agent's next activation loads its state from the replicas,
        which win over any handed-over copy, and the target may have committed much
        since. Kept here as a passive copy, that stale record would make this node a
        second holder of the agent: it would serve the agent's callers here while its
        home, back after a heal, served them there."""
        tombstones, alive = self.directory.tombstones, self.homes.alive
        for k, tomb in list(tombstones.items()):
            if tomb.to in alive or tomb.to == self.self_name:
                continue
            del tombstones[k]
            record = tomb.record
            if record is None or record.state is None:
                continue
            with contextlib.suppress(AgentNotFound):
                spec = lookup_kind(k[0])
                if spec.commits_replies:
                    continue
                if not self.runtime.holds(spec, k[1]):
                    self.runtime.kind(spec).passive[k[1]] = record.state
                    if record.pinned:
                        self.directory.pinned_here.add(k)
                    _log.warning("%s/%s: handoff target %s died; reclaimed the agent",
                                 k[0], k[1], tomb.to)

    def outlived(self, spec: KindSpec, key: str, tomb: Tombstone) -> bool:
        """Whether this node's tombstone of a hashed agent outlived its hand-off: this
        node is the agent's home again (in its own view), does not leave, and no pin
        here sends the agent to the tombstone's node (a migration or an upgrade pins it
        there). Then the node it names pulled the agent while it saw itself as the home
        (views disagree after a heal; ``Release.as_home``), and sends its callers back
        here once the views agree: following the tombstone would loop until it expires.
        The tombstone is dropped, and the agent's next activation here pulls it from
        that node first."""
        k = (spec.name, key)
        if (not tomb.as_home or not spec.hashed or self.homes.leaving
                or (tomb.record is not None and tomb.record.pinned)
                or self.directory.pins.get(k) == tomb.to
                or self.homes.home(spec.name, key) != self.self_name):
            return False
        del self.directory.tombstones[k]
        self._incoming[k] = tomb.to
        _log.info("%s/%s: this node is its home again; pulling it back from %s instead of "
                  "redirecting there", spec.name, key, tomb.to)
        return True

    # ----------------------------------------------------------------- the new host

    async def before_activate(self, spec: KindSpec, key: str) -> HandoffRecord | None:
        """Before a fresh activation here: pull the agent from whoever may still hold it.

        Raises:
            NodeUnavailable: a possible holder is alive but did not answer (definite:
                nothing ran; activating now could make a second copy).
        """
        k = (spec.name, key)
        holder = self._incoming.pop(k, None)
        candidates = ([holder] if holder is not None
                      else self.homes.previous_holders(spec.name, key))
        for name in candidates:
            try:
                reply = await self.client.call(name, "release", wire.encode(
                    wire.Release(spec.name, key, self.self_name, as_home=holder is None)))
            except PhoenixError as exc:
                raise NodeUnavailable(
                    f"{spec.name}/{key}: {name} may still hold this agent and did not "
                    f"answer its release ({exc.message})", definite=True) from exc
            record = wire.decode(reply, wire.ReleaseReply).record
            if record is not None:
                self._drop_stale_pin(k)
                if record.pinned or not spec.hashed:
                    self.directory.pinned_here.add(k)
                await self._pin_at_home(spec, key)
                return record
        self._drop_stale_pin(k)
        if holder is not None:
            await self._pin_at_home(spec, key)
        return None

    def _drop_stale_pin(self, k: Key) -> None:
        """The agent activates here: a pin here naming another host is stale (left by
        a claim of an earlier holder while this node was its home, and that holder has
        let it go). Kept, it would send the agent's callers to that holder, and the
        holder's tombstone would send them back here, once this node is the home
        again and has let the agent go: a redirect loop for the tombstone's lifetime."""
        pins = self.directory.pins
        if pins.get(k, self.self_name) != self.self_name:
            del pins[k]

    async def _pin_at_home(self, spec: KindSpec, key: str) -> None:
        """A handed-over agent that will live here, off its home: move its pin first, so
        the home lets this node load and commit it (the old holder is frozen by now)."""
        k = (spec.name, key)
        directory = self.directory
        home = self.homes.home(spec.name, key)
        if (k not in directory.pinned_here or (spec.hashed and k not in directory.proxied)
                or home is None or home == self.self_name):
            return
        try:
            await directory.claim(home, wire.Claim(spec.name, key, self.self_name, force=True))
        except PhoenixError as exc:
            raise NodeUnavailable(f"{spec.name}/{key}: its home {home} did not take the new "
                                  f"host ({exc.message})", definite=True) from exc

    async def adopt(self, request: wire.Adopt) -> None:
        """Target side of a migration: pull the agent from its holder and host it here."""
        spec = lookup_kind(request.kind)
        k = (request.kind, request.key)
        directory = self.directory
        started = self.clock.monotonic()
        if not self.runtime.holds(spec, request.key):
            # It may come back to us: our old tombstone must not redirect it away.
            directory.tombstones.pop(k, None)
            if request.holder != self.self_name:
                self._incoming[k] = request.holder
            home = self.homes.home(spec.name, request.key)
            if not (spec.hashed and home == self.self_name):
                # Hosted off its home: pinned from the start, so its activation here
                # neither pulls from nor elects over the home's replicas.
                directory.pinned_here.add(k)
                if request.reason in ("manual", "upgrade"):
                    directory.proxied.add(k)  # it stays here: commit through the home
            try:
                await self.runtime.ensure_active(spec, request.key)
            finally:
                self._incoming.pop(k, None)
        home = self.homes.home(spec.name, request.key)
        if home is not None:
            if spec.hashed and home == self.self_name:
                directory.pins.pop(k, None)
                directory.pinned_here.discard(k)
                directory.proxied.discard(k)
            else:
                directory.pinned_here.add(k)
                reply = await directory.claim(home, wire.Claim(spec.name, request.key,
                                                               self.self_name, force=True))
                if spec.hashed and reply.foreign:
                    directory.proxied.add(k)  # its home does not run it: stand in for it
                    directory.stand_in.add(k)
        self.count += 1
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
        alive = self.homes.alive
        if to not in alive:
            raise NodeUnavailable(f"cannot migrate {spec.name}/{key} to {to!r}: not a live "
                                  f"member (members: {', '.join(sorted(alive))})",
                                  definite=True)
        holder = await self.directory.locate(spec, key)
        if holder == to and self.runtime.holds(spec, key) == (to == self.self_name):
            return
        request = wire.Adopt(spec.name, key, holder, reason)
        if to == self.self_name:
            await self.adopt(request)
        else:
            await self.client.call(to, "adopt", wire.encode(request),
                                   timeout_s=2 * self.client.timeout_s)

    # ----------------------------------------------------------------- the holder

    def frozen(self, spec: KindSpec, key: str, to: str, record: HandoffRecord | None) -> None:
        """Called by the runtime the moment the agent stopped here (synchronously)."""
        k = (spec.name, key)
        directory = self.directory
        if record is not None and k in directory.pinned_here:
            record = msgspec.structs.replace(record, pinned=True)
        directory.pinned_here.discard(k)
        directory.proxied.discard(k)
        directory.stand_in.discard(k)
        directory.tombstones[k] = Tombstone(to, record,
                                            self.clock.monotonic() + self.tombstone_s)

    async def release(self, request: wire.Release) -> tuple[wire.ReleaseReply, list[Message]]:
        """Holder side of a pull: freeze the agent and hand over its record. Also returns
        the calls that waited here for the agent: their answers come from ``request.to``
        (the caller relays them)."""
        k = (request.kind, request.key)
        tomb = self.directory.tombstones.get(k)
        if tomb is not None and tomb.to == request.to:
            return wire.ReleaseReply(tomb.record, tomb.record is not None), []
        if request.to == self.self_name or not self.directory.members.hosts(request.kind):
            # A kind not hosted here: held nowhere here.
            return wire.ReleaseReply(None, False), []
        spec = lookup_kind(request.kind)
        self._incoming.pop(k, None)
        waiters = await self.runtime.freeze(spec, request.key, request.to)
        tomb = self.directory.tombstones.get(k)
        record = tomb.record if tomb is not None else None
        if tomb is not None and tomb.to == request.to:
            tomb.as_home = request.as_home
        return wire.ReleaseReply(record, record is not None), waiters
