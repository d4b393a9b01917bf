"""Node services over the transport: a service multiplexer and an RPC client.

Every subsystem below the agents (membership sync, replication, CRDT sync) and beside
them (registry, groups, pub/sub, placement, ``$node.status``) talks to its peers here,
never through the agent router: a service registers ``handler(method, payload) -> reply``
under its name with :class:`Services`, and calls a peer's service with
:meth:`RpcClient.call` (request/response, with a deadline) or :meth:`RpcClient.cast`
(one way). Payloads are bytes the service encodes itself.

On the wire a service call is an ordinary ``Call``/``Cast`` frame whose ``kind`` is the
reserved name ``$<service>`` (no agent kind starts with ``$``) and whose ``key`` is empty,
exactly as before this module existed, so nodes of either version talk to each other
(``docs/design/wire.md``). :class:`Inbound` is the transport's handler: it sends
``$`` frames to :class:`Services` and everything else to the agent layer's handler.

Request ids: service calls and agent calls share the connections, whose replies are
matched by request id, so the node gives the client the same id sequence its agent
runtime uses (``next_request_id``).

Errors are typed (``phoenix_cluster.errors``): what a handler raised comes back as the
same error (an ``Error`` frame, never a pickle); no handler by that name is a definite
:class:`~phoenix_cluster.errors.AgentNotFound`; a call that outlives its deadline is a
:class:`~phoenix_cluster.errors.CallTimeout`, definite when nothing was sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Protocol

from .._foundation.env import Clock
from .._wire.errors import error_frame, error_from_frame
from .._wire.messages import Call, Cast, Error, Redirect, Reply
from ..errors import AgentNotFound, CallTimeout, NodeUnavailable, PhoenixError
from .base import PeerConnection
from .tasks import fail_after

__all__ = [
    "SERVICE_PREFIX",
    "AgentFastPath",
    "AgentHandler",
    "ImmediateHandler",
    "Inbound",
    "RpcClient",
    "ServiceHandler",
    "Services",
]

_log = logging.getLogger("phoenix_cluster.transport")

SERVICE_PREFIX = "$"
"""Frames whose kind starts with this are node-service calls, not agent messages."""

ServiceHandler = Callable[[str, bytes], Awaitable[bytes]]
"""A node service: ``handler(method, payload) -> reply payload``. It raises a
:class:`~phoenix_cluster.errors.PhoenixError` to answer with that error."""

ImmediateHandler = Callable[[str, bytes], bytes | asyncio.Future[bytes] | None]
"""A service's fast path: the reply payload of a method answered without waiting, a
future of it for a method taken now and answered later, or ``None`` for "not now" (see
:meth:`Services.register`)."""


class Peers(Protocol):
    """Where connections come from: ``PeerManager`` or ``FallbackTransport``."""

    async def connection(self, address: str) -> PeerConnection: ...

    def open_connection(self, address: str) -> PeerConnection | None:
        """The live connection to ``address`` if there is one, without dialling."""
        ...


class Services:
    """This node's services by name: what peers reach as ``$<name>``."""

    __slots__ = ("_handlers", "_immediate")

    def __init__(self) -> None:
        self._handlers: dict[str, ServiceHandler] = {}
        self._immediate: dict[str, ImmediateHandler] = {}

    def register(self, name: str, handler: ServiceHandler,
                 immediate: ImmediateHandler | None = None) -> None:
        """Offer ``handler`` to peers as ``$name``.

        ``immediate(method, payload)``, if given, is offered each frame first, on the
        connection's reader with no task of its own: it returns the reply payload of a
        method it answers without waiting for anything, a future of the payload for a
        method it took and answers later (the future's error is the answer if it
        fails), ``None`` to pass the frame to ``handler``, or raises what ``handler``
        would.

        Raises:
            ValueError: ``name`` is taken (two subsystems would answer one name).
        """
        if name in self._handlers:
            raise ValueError(f"service {name!r} is already registered")
        self._handlers[name] = handler
        if immediate is not None:
            self._immediate[name] = immediate

    def try_now(self, frame: Call | Cast,
                answer: Callable[[Reply | Error | Redirect], None]) -> bool:
        """Answer ``frame`` on the spot if its service can (see :meth:`register`);
        ``False`` leaves it to :meth:`serve` in a task."""
        immediate = self._immediate.get(frame.kind[len(SERVICE_PREFIX):])
        if immediate is None:
            return False
        answers = isinstance(frame, Call) or frame.timeout_ms > 0
        try:
            reply = immediate(frame.method, frame.payload)
        except PhoenixError as exc:
            if answers:
                answer(error_frame(frame.request_id, exc))
            else:
                _log.warning("%s.%s (a cast) failed: %s", frame.kind, frame.method,
                             exc.message)
            return True
        except Exception as exc:
            # A bug. Answered here, never passed on: the handler may have done part of
            # its work, and the task path would run it a second time.
            _log.exception("%s.%s raised", frame.kind, frame.method)
            if answers:
                answer(Error(request_id=frame.request_id, code="internal_error",
                             message=f"the handler on the receiving node raised "
                                     f"{type(exc).__name__}: {exc}", definite=False))
            return True
        if reply is None:
            return False
        if isinstance(reply, bytes):
            if answers:
                answer(Reply(frame.request_id, reply))
        else:
            reply.add_done_callback(partial(_answer_later, frame, answers, answer))
        return True

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    async def serve(self, frame: Call | Cast) -> Reply | Error | None:
        """Answer a peer's ``$service`` frame: a Reply or typed Error for a Call (or an
        acknowledged Cast), ``None`` for a plain Cast (a failure is logged)."""
        answers = isinstance(frame, Call) or frame.timeout_ms > 0
        try:
            reply = await self._handler(frame.kind[len(SERVICE_PREFIX):])(frame.method,
                                                                         frame.payload)
        except PhoenixError as exc:
            if answers:
                return error_frame(frame.request_id, exc)
            _log.warning("%s.%s (a cast) failed: %s", frame.kind, frame.method, exc.message)
            return None
        return Reply(frame.request_id, reply) if answers else None

    def _handler(self, name: str) -> ServiceHandler:
        handler = self._handlers.get(name)
        if handler is None:
            raise AgentNotFound(f"this node has no service '{SERVICE_PREFIX}{name}'")
        return handler

    def __repr__(self) -> str:
        return f"<Services [{', '.join(sorted(self._handlers))}]>"


def _answer_later(frame: Call | Cast, answers: bool,
                  answer: Callable[[Reply | Error | Redirect], None],
                  reply: asyncio.Future[bytes]) -> None:
    """Answer ``frame`` with what the future of an immediate handler became."""
    exc: BaseException | None = (asyncio.CancelledError() if reply.cancelled()
                                 else reply.exception())
    if exc is None:
        if answers:
            answer(Reply(frame.request_id, reply.result()))
        return
    if isinstance(exc, PhoenixError):
        if answers:
            answer(error_frame(frame.request_id, exc))
        else:
            _log.warning("%s.%s (a cast) failed: %s", frame.kind, frame.method, exc.message)
        return
    if not isinstance(exc, asyncio.CancelledError):
        _log.error("%s.%s raised", frame.kind, frame.method, exc_info=exc)
    if answers:
        answer(Error(request_id=frame.request_id, code="internal_error",
                     message=f"the handler on the receiving node failed: {exc!r}",
                     definite=False))


AgentHandler = Callable[[PeerConnection, Call | Cast],
                        Awaitable[Reply | Error | Redirect | None]]
AgentFastPath = Callable[[PeerConnection, Call | Cast,
                          Callable[[Reply | Error | Redirect], None]], bool]


class Inbound:
    """The transport's inbound handler: node services here, agent messages to the agent
    layer's handlers once :meth:`serve_agents` installed them.

    Until then (or on a node that hosts no agent layer) an agent message gets a definite
    ``NodeUnavailable``: nothing ran.
    """

    __slots__ = ("_agents", "_try_now", "services")

    def __init__(self, services: Services) -> None:
        self.services = services
        self._agents: AgentHandler | None = None
        self._try_now: AgentFastPath | None = None

    def serve_agents(self, handle: AgentHandler, try_now: AgentFastPath | None = None) -> None:
        """Send agent messages to ``handle`` (in a task per message) and first offer them
        to ``try_now``, the fast path (see ``InboundHandler`` in ``base.py``)."""
        self._agents, self._try_now = handle, try_now

    async def __call__(self, peer: PeerConnection,
                       frame: Call | Cast) -> Reply | Error | Redirect | None:
        if frame.kind.startswith(SERVICE_PREFIX):
            return await self.services.serve(frame)
        agents = self._agents
        if agents is None:
            return error_frame(frame.request_id, NodeUnavailable(
                "this node serves no agent messages yet", definite=True))
        return await agents(peer, frame)

    def try_now(self, peer: PeerConnection, frame: Call | Cast,
                answer: Callable[[Reply | Error | Redirect], None]) -> bool:
        if frame.kind.startswith(SERVICE_PREFIX):
            return self.services.try_now(frame, answer)
        try_now = self._try_now
        if try_now is None:
            return False
        return try_now(peer, frame, answer)


class RpcClient:
    """Calls other nodes' services.

    Args:
        peers: connections to other nodes.
        clock: the node's clock (deadlines).
        next_request_id: the node's request-id sequence (shared with agent calls, since
            both ride the same connections).
    """

    __slots__ = ("_clock", "_next_id", "addresses", "peers")

    def __init__(self, peers: Peers, clock: Clock, next_request_id: Callable[[], int]) -> None:
        self.peers = peers
        self._clock = clock
        self._next_id = next_request_id
        self.addresses: Mapping[str, str] = {}
        """Members' addresses by name, for :meth:`call_node` (the node replaces it on
        every membership change)."""

    async def call_node(self, service: str, node: str, method: str, payload: bytes,
                        timeout_s: float) -> bytes:
        """:meth:`call` the member named ``node`` (replication and CRDT sync address
        members by name).

        Raises:
            NodeUnavailable: no address is known for ``node`` (definite), or as
                :meth:`call`.
        """
        address = self.addresses.get(node)
        if not address:
            raise NodeUnavailable(f"no address known for node {node!r}", definite=True)
        return await self.call(address, service, method, payload, timeout_s)

    def start_node(self, service: str, node: str, method: str, payload: bytes,
                   timeout_s: float, answered: Callable[[bytes | BaseException], None],
                   ) -> bool:
        """:meth:`call_node` with no task, when the member's connection is open: the
        call is queued now and ``answered`` gets the reply payload, or the error
        :meth:`call` would raise, from the connection's reader. ``False``: nothing was
        sent (no open connection, a full send queue, a transport without this path):
        use :meth:`call_node`.

        Raises:
            ProtocolError: the call exceeds ``max_frame_bytes``; nothing was sent.
        """
        address = self.addresses.get(node)
        if not address:
            return False
        start = getattr(self.peers.open_connection(address), "start_request", None)
        if start is None:
            return False
        request_id = self._next_id()
        call = Call(request_id, f"{SERVICE_PREFIX}{service}", "", method, payload,
                    max(1, int(timeout_s * 1000)))
        started: bool = start(call, timeout_s, partial(
            _unwrap, f"${service}.{method}", address, request_id, answered))
        return started

    async def call(self, address: str, service: str, method: str, payload: bytes,
                   timeout_s: float) -> bytes:
        """Call ``$service.method`` on the node at ``address``; its reply payload.

        Raises:
            CallTimeout: no answer within ``timeout_s`` (definite when the request never
                left this node: no connection in time).
            NodeUnavailable, TransportError: the node could not be reached, or the
                connection broke (``definite`` says whether the request may have run).
            PhoenixError: what the service raised there (``AgentNotFound`` for a service
                that node does not have).
        """
        request_id = self._next_id()
        deadline = self._clock.monotonic() + timeout_s
        # Connected already (the usual case): no deadline timer for a step that cannot wait.
        conn = self.peers.open_connection(address)
        if conn is None:
            try:
                async with fail_after(self._clock, timeout_s):
                    conn = await self.peers.connection(address)
            except TimeoutError:
                raise CallTimeout(f"${service}.{method}: no connection to {address} within "
                                  f"{timeout_s}s", definite=True,
                                  request_id=request_id) from None
        remaining = max(deadline - self._clock.monotonic(), 0.001)
        answer = await conn.request(
            Call(request_id, f"{SERVICE_PREFIX}{service}", "", method, payload,
                 max(1, int(remaining * 1000))),
            remaining,
        )
        if isinstance(answer, Reply):
            return answer.payload
        if isinstance(answer, Redirect):  # a service is never redirected: a confused peer
            raise NodeUnavailable(f"{address} redirected a ${service} call", definite=True,
                                  request_id=request_id)
        raise error_from_frame(answer)

    async def cast(self, address: str, service: str, method: str, payload: bytes,
                   timeout_s: float) -> None:
        """Send ``$service.method`` to the node at ``address`` without an answer; returns
        once it is queued on the connection (casts to one node arrive in order).

        Raises:
            CallTimeout: not queued within ``timeout_s`` (definite: nothing was sent).
            NodeUnavailable, TransportError: no connection to that node.
        """
        frame = Cast(self._next_id(), f"{SERVICE_PREFIX}{service}", "", method, payload)
        try:
            async with fail_after(self._clock, timeout_s):
                conn = await self.peers.connection(address)
                await conn.send(frame)
        except TimeoutError:
            raise CallTimeout(f"${service}.{method} to {address} not sent within "
                              f"{timeout_s}s", definite=True,
                              request_id=frame.request_id) from None

    def __repr__(self) -> str:
        return f"<RpcClient via {type(self.peers).__name__}>"


def _unwrap(what: str, address: str, request_id: int,
            answered: Callable[[bytes | BaseException], None],
            answer: Reply | Error | Redirect | BaseException) -> None:
    """An answer as :meth:`RpcClient.call` turns it into a payload or an error."""
    if isinstance(answer, Reply):
        answered(answer.payload)
    elif isinstance(answer, Redirect):  # a service is never redirected: a confused peer
        answered(NodeUnavailable(f"{address} redirected a {what} call", definite=True,
                                 request_id=request_id))
    elif isinstance(answer, Error):
        answered(error_from_frame(answer))
    else:
        answered(answer)
