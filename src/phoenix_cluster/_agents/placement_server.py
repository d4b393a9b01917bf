"""The peers' side of ``$placement``: what this node answers other members.

Each request names one part of placement (``placement.py`` builds them): releases and
adoptions go to the migrations (``migration.py``), claims and locates to the directory
(``directory.py``), load reports to the member loads (``member_loads.py``), forwarded
casts are admitted like any inbound cast. Two jobs live here because they need more than
placement: a released agent's waiting calls are relayed through the router to its new
host, and a home lets the host of an agent placed away from it load and commit the
agent's state through its replicator (``rload``/``rcommit``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from .._replication.types import Record
from ..errors import AgentNotFound, NotLeader, PhoenixError, ProtocolError
from . import handoff as wire
from .kinds import KindSpec, lookup_kind
from .mailbox import Message
from .placement import PLACE, PlacementService

if TYPE_CHECKING:
    from .._replication.service import Replicator
    from .dispatch import Router

__all__ = ["PlacementServer"]


class PlacementServer:
    """Answers ``$placement`` requests from other members for one node.

    Args:
        placement: this node's placement service.
        router: relays the answers of calls that waited here for an agent that moved.
    """

    def __init__(self, placement: PlacementService, router: Router) -> None:
        self.placement = placement
        self.router = router
        self.self_name = placement.self_name

    async def handle(self, method: str, payload: bytes) -> bytes:
        """The ``$placement`` service peers call.

        Raises:
            ProtocolError: a malformed request.
            AgentNotFound: an unknown method.
        """
        placement = self.placement
        try:
            if method == "release":
                return wire.encode(await self.release(wire.decode(payload, wire.Release)))
            if method == "adopt":
                await placement.migrations.adopt(wire.decode(payload, wire.Adopt))
                return b""
            if method == "claim":
                return wire.encode(placement.directory.claim_here(
                    wire.decode(payload, wire.Claim)))
            if method == "locate":
                return wire.encode(await placement.directory.answer_locate(
                    wire.decode(payload, wire.Locate)))
            if method == "load":
                return wire.encode(placement.members.local_load())
            if method == "rload":
                return wire.encode(await self._remote_load(
                    wire.decode(payload, wire.RemoteLoad)))
            if method == "rcommit":
                await self._remote_commit(wire.decode(payload, wire.RemoteCommit))
                return b""
            if method == "flush":
                request = wire.decode(payload, wire.Locate)
                await placement.forwarded(placement.spec_for(request.kind), request.key)
                return b""
            if method == "deliver":
                await self._deliver(wire.decode(payload, wire.Deliver))
                return b""
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ProtocolError(f"malformed $placement.{method} request: {exc}") from exc
        raise AgentNotFound(f"node {self.self_name} has no placement method {method!r}")

    # ----------------------------------------------------------------- handoff

    async def release(self, request: wire.Release) -> wire.ReleaseReply:
        """Holder side of a pull: freeze the agent and hand over its record; the calls
        that waited here for it get their answers from its new host."""
        reply, waiters = await self.placement.migrations.release(request)
        if waiters:
            spec = lookup_kind(request.kind)
            self.placement.tasks.spawn(self._relay(spec, request.key, request.to, waiters),
                                       name="phx-placement-relay")
        return reply

    async def _relay(self, spec: KindSpec, key: str, to: str, waiters: list[Message]) -> None:
        """Relay the answers of calls that were queued here when the agent moved."""
        router, clock = self.router, self.placement.clock
        address = self.placement.address(to)

        async def one(msg: Message) -> None:
            future = msg.future
            assert future is not None
            remaining = msg.deadline - clock.monotonic()
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

    # ----------------------------------------------------------------- forwarded casts

    async def _deliver(self, deliver: wire.Deliver) -> None:
        """A cast forwarded here: queue it (waiting for room), or pass it on; answer
        only once it is queued, so the forwarder (and the sender) learn of a refusal."""
        placement = self.placement
        spec = placement.spec_for(deliver.kind)
        passed_on: asyncio.Future[None] | None = None
        async with placement.admission(spec, deliver.key):
            where = placement.admit(spec, deliver.key)
            if where is PLACE:
                where = await placement.admit_async(spec, deliver.key, "")
            if isinstance(where, tuple):
                passed_on = placement.forward_cast(spec, deliver.key, deliver.request_id,
                                                   deliver.method, deliver.payload, where[1],
                                                   acked=True)
            else:
                await placement.runtime.casts.submit(spec, deliver.key, deliver.method,
                                                    deliver.payload, deliver.request_id,
                                                    placement.rpc_timeout_s / 2)
        if passed_on is not None:
            await passed_on

    # ----------------------------------------------------------------- commits through the home

    def _home_replicator(self, kind: str, key: str, host: str) -> Replicator:
        """At the home: the replicator ``host`` may load and commit ``kind/key`` through,
        if the directory names it the host.

        Raises:
            NotLeader: this node is not the key's home, replicates nothing, or ``host``
                is not the agent's host (definite: nothing was read or stored; the host
                stops the agent).
        """
        placement = self.placement
        directory = placement.directory
        spec = placement.spec_for(kind)
        k = (kind, key)
        home = placement.home(kind, key)
        if home != self.self_name:
            raise NotLeader(f"node {self.self_name} is not the home of {kind}/{key} "
                            f"(the home is {home})", definite=True)
        pin = directory.pins.get(k)
        if pin is None and not spec.hashed and host in placement.alive:
            pin = directory.pins[k] = host  # a policy agent placed before this home took over
        if pin != host:
            raise NotLeader(f"{kind}/{key} is hosted by {pin or self.self_name}, not {host}",
                            definite=True)
        replicator = placement.runtime.replicator
        if replicator is None:
            raise NotLeader(f"node {self.self_name} replicates nothing", definite=True)
        return replicator

    async def _remote_load(self, request: wire.RemoteLoad) -> wire.RemoteRecord:
        replicator = self._home_replicator(request.kind, request.key, request.host)
        record = await replicator.load(request.kind, request.key, request.replicas)
        if record is None:
            return wire.RemoteRecord(False)
        return wire.RemoteRecord(True, record.state, record.replies)

    async def _remote_commit(self, request: wire.RemoteCommit) -> None:
        replicator = self._home_replicator(request.kind, request.key, request.host)
        await replicator.commit(request.kind, request.key,
                                Record(request.state, request.replies),
                                "async" if request.durability == "async" else "quorum",
                                request.replicas)
