"""Looking inside a running cluster: which agents live where, and one agent's state.

Each member answers for itself through its ``$inspect`` service (``list``, ``show``):
the agents it holds (active or passivated), and, for ``show``, the committed version
its replica store has of the key. :class:`ClusterInspector` asks every live member at
once (``cluster_list``, ``cluster_show``: the same service, so ``phx agents`` asks one
seed and the seed asks the others) and merges the answers; the HTTP endpoint
(``/api/agents/list``, ``/api/agents/show``) and the dashboard read the same merge.

Read-only: nothing here activates, moves or changes an agent. A member that does not
answer within the timeout is named in ``unreachable``, never silently left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .._foundation.env import Clock
from .._replication.groups import DEFAULT_REPLICAS, group_of
from .._ring.hashing import key_hash
from .._ring.partitions import partition_of
from ..errors import AgentNotFound, PhoenixError
from .agent import worker_of
from .kinds import find_kind, lookup_kind
from .mailbox import Activation, KindRuntime

if TYPE_CHECKING:
    from .._replication.service import Replicator

__all__ = [
    "AgentDetail",
    "AgentListing",
    "AgentSummary",
    "ClusterInspector",
    "Inspector",
    "ListRequest",
    "ShowReply",
    "ShowRequest",
    "agent_json",
    "listing_json",
]

_log = logging.getLogger("phoenix_cluster.agents")

DEFAULT_LIMIT = 1000
"""Agents one member lists at most unless asked for more (``--limit``)."""


class ListRequest(msgspec.Struct, frozen=True):
    """``$inspect.list`` / ``cluster_list``: agents of ``kind`` (all kinds if empty), on
    ``node`` (every member if empty; ``cluster_list`` only), at most ``limit`` per node."""

    kind: str = ""
    node: str = ""
    limit: int = DEFAULT_LIMIT


class AgentSummary(msgspec.Struct, frozen=True):
    """One agent held by one node. ``status``: ``"active"`` or ``"passive"``;
    ``workers``: activations of a stateless kind's key (1 for any other kind);
    ``last_active``: wall-clock seconds of its last message (``None`` when passive)."""

    kind: str
    key: str
    node: str
    status: str
    mailbox_depth: int = 0
    busy: bool = False
    last_active: float | None = None
    workers: int = 1


class AgentListing(msgspec.Struct, frozen=True):
    """What one or more members hold. ``unknown_kind``: no member that answered knows
    the asked kind; ``truncated``: a member had more than ``limit``; ``unreachable``:
    members that did not answer."""

    agents: list[AgentSummary]
    unknown_kind: bool = False
    truncated: bool = False
    unreachable: list[str] = []


class ShowRequest(msgspec.Struct, frozen=True):
    kind: str
    key: str


class AgentDetail(msgspec.Struct, frozen=True):
    """One node's view of one agent: its activation there (if any) and the version of
    the committed state its replica store has (if any). ``state`` is the msgpack of the
    agent's snapshot (the activation's, else the stored one)."""

    node: str
    status: str  # "active", "passive", "stored" (only committed on this replica)
    state: bytes | None = None
    version: tuple[int, int] | None = None  # (epoch, sequence) of the committed entry
    replicas: list[str] = []
    mailbox_depth: int = 0
    busy: bool = False
    last_active: float | None = None
    workers: int = 0


class ShowReply(msgspec.Struct, frozen=True):
    """Every answering node's view of one agent (``details``); ``unknown_kind``: no
    answering member knows the kind."""

    kind: str
    key: str
    details: list[AgentDetail]
    unknown_kind: bool = False
    unreachable: list[str] = []


class Inspector:
    """This node's answers (``$inspect.list``, ``$inspect.show``)."""

    def __init__(self, node_name: str, kinds: Callable[[], dict[str, KindRuntime]],
                 clock: Clock, replicator: Callable[[], Replicator | None]) -> None:
        self.node_name = node_name
        self._kinds = kinds
        self._clock = clock
        self._replicator = replicator

    def list_agents(self, request: ListRequest) -> AgentListing:
        kinds = self._kinds()
        unknown = bool(request.kind) and not _known(request.kind)
        agents: list[AgentSummary] = []
        truncated = False
        for name, kr in sorted(kinds.items()):
            if request.kind and name != request.kind:
                continue
            for summary in self._summaries(kr):
                if len(agents) >= request.limit:
                    truncated = True
                    break
                agents.append(summary)
        return AgentListing(agents, unknown_kind=unknown, truncated=truncated)

    def _summaries(self, kr: KindRuntime) -> list[AgentSummary]:
        name = kr.spec.name
        out: list[AgentSummary] = []
        if kr.workers:
            by_key: dict[str, list[Activation]] = {}
            for act in kr.activations.values():
                by_key.setdefault(worker_of(act.key), []).append(act)
            for key, acts in sorted(by_key.items()):
                out.append(AgentSummary(
                    name, key, self.node_name, "active",
                    sum(len(a.queue) for a in acts if a.queue),
                    any(a.task is not None for a in acts),
                    max(self._wall(a.last_used) for a in acts), len(acts)))
            return out
        for key, act in sorted(kr.activations.items()):
            out.append(AgentSummary(name, key, self.node_name, "active",
                                    len(act.queue) if act.queue else 0,
                                    act.task is not None, self._wall(act.last_used)))
        for key in sorted(kr.passive):
            if key not in kr.activations:
                out.append(AgentSummary(name, key, self.node_name, "passive"))
        return out

    def show_agent(self, request: ShowRequest) -> ShowReply:
        if not _known(request.kind):
            return ShowReply(request.kind, request.key, [], unknown_kind=True)
        spec = lookup_kind(request.kind)
        kr = self._kinds().get(request.kind)
        version, stored, replicas = self._stored(request.kind, request.key,
                                                 replicated=spec.durability != "none")
        detail: AgentDetail | None = None
        if kr is not None and kr.workers:
            acts = [a for k, a in kr.activations.items() if worker_of(k) == request.key]
            if acts:
                detail = AgentDetail(
                    self.node_name, "active", acts[0].committed or None,
                    mailbox_depth=sum(len(a.queue) for a in acts if a.queue),
                    busy=any(a.task is not None for a in acts),
                    last_active=max(self._wall(a.last_used) for a in acts),
                    workers=len(acts))
        elif kr is not None and (act := kr.activations.get(request.key)) is not None:
            detail = AgentDetail(self.node_name, "active", act.committed or None, version,
                                 replicas, len(act.queue) if act.queue else 0,
                                 act.task is not None, self._wall(act.last_used), 1)
        elif kr is not None and request.key in kr.passive:
            detail = AgentDetail(self.node_name, "passive", kr.passive[request.key],
                                 version, replicas)
        elif stored is not None:
            detail = AgentDetail(self.node_name, "stored", stored, version, replicas)
        return ShowReply(request.kind, request.key, [] if detail is None else [detail])

    def _stored(self, kind: str, key: str, *, replicated: bool
                ) -> tuple[tuple[int, int] | None, bytes | None, list[str]]:
        """The committed version and state this node's replica store has of the key,
        and the key's replica set in this node's table."""
        replicator = self._replicator()
        if replicator is None or not replicated:
            return None, None, []
        spec = find_kind(kind)
        group = group_of(partition_of(key_hash(kind, key)),
                         DEFAULT_REPLICAS if spec is None else spec.replicas)
        entry = replicator.store.get(group, kind, key)
        replicas = list(replicator.replica_set(group))
        if entry is None:
            return None, None, replicas
        return (entry.counter, entry.seq), entry.state, replicas

    def _wall(self, monotonic: float) -> float:
        clock = self._clock
        return round(clock.wall() - (clock.monotonic() - monotonic), 3)

    async def handle(self, method: str, payload: bytes) -> bytes:
        """``$inspect.list`` and ``$inspect.show`` (this node only)."""
        try:
            if method == "list":
                return msgspec.msgpack.encode(
                    self.list_agents(msgspec.msgpack.decode(payload, type=ListRequest)))
            if method == "show":
                return msgspec.msgpack.encode(
                    self.show_agent(msgspec.msgpack.decode(payload, type=ShowRequest)))
        except msgspec.DecodeError as exc:
            raise PhoenixError(f"malformed $inspect.{method} request: {exc}") from None
        raise AgentNotFound(f"node {self.node_name} has no inspect method {method!r}")


def _known(kind: str) -> bool:
    try:
        lookup_kind(kind)
    except AgentNotFound:
        return False
    return True


Ask = Callable[[str, str, bytes, float], Coroutine[Any, Any, bytes]]
"""``ask(address, method, payload, timeout_s)``: a peer's ``$inspect.method``."""


class ClusterInspector:
    """Asks every live member (this one locally) and merges their answers.

    Args:
        local: this node's :class:`Inspector` (``None`` on a client: it holds nothing).
        members: the live hosting members, as ``(name, address)``.
        ask: calls a peer's ``$inspect`` service.
        timeout_s: how long a member may take before it counts as unreachable.
    """

    def __init__(self, local: Inspector | None,
                 members: Callable[[], Sequence[tuple[str, str]]], ask: Ask | None,
                 timeout_s: float = 2.0) -> None:
        self.local = local
        self._members = members
        self._ask = ask
        self.timeout_s = timeout_s

    async def list_agents(self, request: ListRequest) -> AgentListing:
        """Agents on every member (or ``request.node``), sorted by kind, key, node.

        Raises:
            PhoenixError: ``request.node`` is not a live member.
        """
        targets = [m for m in self._members() if not request.node or m[0] == request.node]
        if request.node and not targets:
            raise PhoenixError(f"no live member is named {request.node!r}")
        answers, unreachable = await self._gather(targets, "list", request,
                                                  AgentListing, self._local_list)
        agents = sorted((a for r in answers for a in r.agents),
                        key=lambda a: (a.kind, a.key, a.node))
        known = not answers or any(not r.unknown_kind for r in answers)
        return AgentListing(agents, unknown_kind=not known,
                            truncated=any(r.truncated for r in answers),
                            unreachable=unreachable)

    async def show_agent(self, request: ShowRequest) -> ShowReply:
        """Every member's view of one agent, the holders first."""
        answers, unreachable = await self._gather(list(self._members()), "show", request,
                                                  ShowReply, self._local_show)
        details = sorted((d for r in answers for d in r.details),
                         key=lambda d: (_RANK.get(d.status, 9), d.node))
        known = not answers or any(not r.unknown_kind for r in answers)
        return ShowReply(request.kind, request.key, details, unknown_kind=not known,
                         unreachable=unreachable)

    def _local_list(self, request: ListRequest) -> AgentListing:
        assert self.local is not None
        return self.local.list_agents(request)

    def _local_show(self, request: ShowRequest) -> ShowReply:
        assert self.local is not None
        return self.local.show_agent(request)

    async def _gather(self, targets: Sequence[tuple[str, str]], method: str,
                      request: msgspec.Struct, reply_type: type[Any],
                      local: Callable[[Any], Any]) -> tuple[list[Any], list[str]]:
        answers: list[Any] = []
        asks: dict[str, asyncio.Task[bytes]] = {}
        payload = msgspec.msgpack.encode(request)
        for name, address in targets:
            if self.local is not None and name == self.local.node_name:
                answers.append(local(request))
            elif self._ask is not None and address:
                asks[name] = asyncio.create_task(
                    self._ask(address, method, payload, self.timeout_s))
        unreachable: list[str] = []
        if asks:
            await asyncio.wait(asks.values(), timeout=self.timeout_s + 0.5)
        for name, task in sorted(asks.items()):
            if not task.done():
                task.cancel()
                unreachable.append(name)
                continue
            if task.cancelled() or task.exception() is not None:
                _log.info("no $inspect.%s answer from %s: %r", method, name,
                          None if task.cancelled() else task.exception())
                unreachable.append(name)
                continue
            try:
                answers.append(msgspec.msgpack.decode(task.result(), type=reply_type))
            except msgspec.DecodeError as exc:
                _log.info("a malformed $inspect.%s answer from %s: %s", method, name, exc)
                unreachable.append(name)
        return answers, unreachable

    async def handle(self, method: str, payload: bytes) -> bytes:
        """``$inspect.cluster_list`` / ``cluster_show`` (fan out from this node), else
        this node's own ``list`` / ``show``."""
        try:
            if method == "cluster_list":
                return msgspec.msgpack.encode(
                    await self.list_agents(msgspec.msgpack.decode(payload, type=ListRequest)))
            if method == "cluster_show":
                return msgspec.msgpack.encode(
                    await self.show_agent(msgspec.msgpack.decode(payload, type=ShowRequest)))
        except msgspec.DecodeError as exc:
            raise PhoenixError(f"malformed $inspect.{method} request: {exc}") from None
        if self.local is None:
            raise AgentNotFound(f"this node has no inspect method {method!r}")
        return await self.local.handle(method, payload)


_RANK = {"active": 0, "passive": 1, "stored": 2}


def listing_json(listing: AgentListing) -> dict[str, Any]:
    """The JSON body of ``/api/agents/list`` and ``phx agents list --json``."""
    return {
        "agents": [msgspec.to_builtins(a) for a in listing.agents],
        "truncated": listing.truncated,
        "unreachable": listing.unreachable,
    }


def agent_json(reply: ShowReply) -> dict[str, Any] | None:
    """The JSON body of ``/api/agents/show`` and ``phx agents show --json``; ``None``
    when no member holds the agent or has it committed.

    ``status`` is the best any node reports (``active``, then ``passive``, then
    ``stored``: only committed on its replicas); ``owner`` the node where it is active
    (``None`` if nowhere); ``hosts`` every node holding an activation or passivated
    copy (a stateless kind's workers may be on several); ``version`` the newest
    committed ``"epoch.sequence"`` any replica reported; ``state`` the agent's snapshot
    as JSON (bytes as base64), from its activation if active.
    """
    details = reply.details
    if not details:
        return None
    held = [d for d in details if d.status in ("active", "passive")]
    shown = next((d for d in details if d.state is not None), details[0])
    versions = [d.version for d in details if d.version is not None]
    newest = max(versions) if versions else None
    active = [d for d in held if d.status == "active"]
    last = [d.last_active for d in held if d.last_active is not None]
    return {
        "kind": reply.kind,
        "key": reply.key,
        "status": details[0].status,
        "owner": active[0].node if active else None,
        "hosts": [d.node for d in held],
        "replicas": next((d.replicas for d in details if d.replicas), []),
        "version": None if newest is None else f"{newest[0]}.{newest[1]}",
        "mailbox_depth": sum(d.mailbox_depth for d in held),
        "busy": any(d.busy for d in held),
        "last_active": max(last) if last else None,
        "workers": sum(d.workers for d in active),
        "state": None if shown.state is None else msgspec.msgpack.decode(shown.state),
        "unreachable": reply.unreachable,
    }
