"""Routing messages between nodes: remote calls out, inbound calls in, redirects, retries.

The caller's node decides where a key lives from its own view of the cluster (the
:class:`~.placement.PlacementService`: homes on the ring, the directory, tombstones of
agents that moved). A node that receives a message for an agent it does not host answers
with a :class:`Redirect`, never with silence, and the caller follows it (a bounded number
of hops) and remembers where the agent lives.
Inbound frames for a local agent are taken on the spot (:meth:`Router.try_now`); those
that must wait run in a task of their own (``inbound_waits.py``).

Definite and indefinite errors: a failure before the request left this node
is definite; once it was sent, losing the connection makes the outcome unknown. A call
whose connection breaks is re-sent on a fresh connection with the *same* request id,
which the owner's per-agent dedup window turns into at-most-once execution.

A call whose owner cannot be reached before anything was sent (the connection is
refused, the peer's circuit breaker is open) is *retried* until its deadline, routed
afresh each time: once the membership declares the owner dead its keys route to a
survivor, and a restarted owner answers again. The caller sees the error only if the
deadline passes first (``Router.calls_retried`` counts the calls that needed it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from .._telemetry import tracing
from .._telemetry.tracing import NO_HEADERS
from .._transport.base import ConnectionBroken, ConnectionClosed, PeerConnection
from .._transport.rpc import RpcClient
from .._transport.tasks import fail_after
from .._wire.errors import error_frame, error_from_frame
from .._wire.messages import Call, Cast, Error, Redirect, Reply
from ..errors import (
    CallTimeout,
    NodeUnavailable,
    Overloaded,
    PhoenixError,
    PhoenixInternalError,
)
from .agent import KindSpec, MethodSpec
from .chain import CHAIN_HEADER, Link
from .chain import encode as encode_chain
from .inbound_waits import acknowledge, report_refused, wait_result
from .placement import PLACE, PlacementService
from .remote_cast import send_cast
from .reroute import reroute_delay, resend_elsewhere

if TYPE_CHECKING:
    from .._telemetry.tracing import NodeTracer
    from .runtime import AgentRuntime


class Peers(Protocol):
    """Where the router gets connections: ``PeerManager`` or ``FallbackTransport``."""

    async def connection(self, address: str) -> PeerConnection: ...

__all__ = ["Router"]

_log = logging.getLogger("phoenix_cluster.dispatch")

MAX_REDIRECTS = 4
MAX_RESENDS = 3


def retry_delay(attempt: int) -> float:
    """Backoff before the ``attempt``-th retry of an unreachable owner (seconds): 50 ms
    doubling, at most 0.4 s, so a caller notices a failover within a few hundred ms."""
    return float(min(0.05 * 2.0 ** attempt, 0.4))


class Router:
    """Sends messages to remote owners and serves messages from peers.

    Args:
        runtime: the local agent runtime (hosts keys this node owns).
        peers: connections to other nodes.
        self_name: this node's name.
        placement: where agents live (homes, directory, tombstones).
        rpc: calls other nodes' services (``$placement.flush``).
        tracer: opens a span around each call sent (``None``: tracing is off).
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        peers: Peers,
        *,
        self_name: str,
        placement: PlacementService,
        rpc: RpcClient,
        tracer: NodeTracer | None = None,
    ) -> None:
        self.runtime = runtime
        self.peers = peers
        self.self_name = self_name
        self.placement = placement
        self.rpc = rpc
        self.tracer = tracer
        self._clock = runtime.clock
        self.redirects_followed = 0
        self.resends = 0
        self.calls_retried = 0
        """Calls retried after a definite failure to reach their owner (each counted once,
        however often it was retried, whether or not it answered in the end)."""
        self.cast_paths: dict[tuple[str, str], str] = {}
        """Where this node's last cast to each agent went (``""``: here), while it may
        still be in flight: see :meth:`keep_order`."""

    def remote_address(self, spec: KindSpec, key: str) -> str | object | None:
        """Where to send a message for ``key``: an address, ``None`` when this node
        serves it, or ``PLACE`` when this node (the home) must choose a host first
        (:meth:`resolve`).

        Raises:
            NodeUnavailable: no member can host agents (definite).
        """
        return self.placement.route(spec, key)

    async def resolve(self, spec: KindSpec, key: str) -> str | None:
        """Choose and pin a host for a policy-placed agent whose home is this node."""
        return await self.placement.resolve(spec, key)

    async def keep_order(self, spec: KindSpec, key: str, address: str | None,
                         is_cast: bool) -> None:
        """Keep one sender's messages to an agent in order when their path changes.

        A cast is done once queued towards the node this sender believed hosts the
        agent; if that node had just handed the agent off it forwards the cast. Before
        the next message to the same agent takes another path (the sender's view
        changed), ask the old node to finish forwarding (``$placement.flush``), so the
        new message cannot overtake the cast.
        """
        k = (spec.name, key)
        target = address or ""
        previous = self.cast_paths.get(k)
        if previous is not None and previous != target:
            del self.cast_paths[k]
            if previous:
                try:
                    await self.rpc.call(previous, "placement", "flush",
                                        self.placement.flush_request(spec, key), 5.0)
                except PhoenixError as exc:
                    _log.info("could not flush casts to %s/%s at %s: %s", spec.name, key,
                              previous, exc.message)
            else:
                await self.placement.forwarded(spec, key)
        if is_cast:
            if len(self.cast_paths) >= 100_000:
                self.cast_paths.clear()
            self.cast_paths[k] = target

    # ----------------------------------------------------------------- outbound

    async def call(
        self,
        spec: KindSpec,
        key: str,
        method: MethodSpec,
        payload: bytes,
        timeout_s: float,
        request_id: int,
        address: str,
        chain: tuple[Link, ...] = (),
    ) -> Any:
        """Run a call on the owner at ``address`` (following redirects); decode the result.
        ``chain``: the agents waiting on it (``chain.py``), sent in a header."""
        reply = await self.call_raw(spec, key, method.name, payload, timeout_s, request_id,
                                    address, chain=chain)
        return method.result_decoder.decode(reply)

    async def call_raw(
        self,
        spec: KindSpec,
        key: str,
        method: str,
        payload: bytes,
        timeout_s: float,
        request_id: int,
        address: str,
        headers: dict[str, str] | None = None,
        *,
        chain: tuple[Link, ...] = (),
    ) -> bytes:
        """Run a call on the owner at ``address`` (following redirects); the reply bytes.

        ``headers`` travel with every frame of the call; ``None`` (the default) lets the
        node's tracer, when tracing is on, open the CLIENT span whose context they carry.
        """
        if headers is None:
            tracer = self.tracer
            if tracer is not None:
                return await tracer.client_call(
                    lambda h: self.call_raw(spec, key, method, payload, timeout_s,
                                            request_id, address, h, chain=chain),
                    spec.name, key, method, request_id, address)
            headers = NO_HEADERS
        if chain:
            headers = {**headers, CHAIN_HEADER: encode_chain(chain)}
        clock = self._clock
        deadline = clock.monotonic() + timeout_s
        sent = False
        hops = resends = dials = reroutes = 0
        # Where this route started, and the owners its redirects named (kept only once a
        # redirect comes: the error that reports a loop names them).
        route_start, path = address, None
        try:
            while True:
                remaining = deadline - clock.monotonic()
                if remaining <= 0:
                    raise CallTimeout(
                        f"call {spec.name}/{key}.{method} timed out (request {request_id})",
                        request_id=request_id,
                    )
                try:
                    async with fail_after(clock, remaining):
                        conn = await self._connect(address, sent, request_id)
                except NodeUnavailable as exc:
                    if not exc.definite:
                        raise
                    # Nothing was sent. Retry within the deadline, routed afresh: our view (or
                    # that of the member that redirected us) may still hold a node that died,
                    # until the membership moves its keys; or a member sees a restarted node
                    # our view has not caught up with, and redirects us there again.
                    delay = retry_delay(dials)
                    if remaining <= delay:
                        raise NodeUnavailable(
                            f"{exc.message} (tried {dials + 1} times within the call's timeout)",
                            definite=True, request_id=request_id) from exc
                    if not dials:
                        self.calls_retried += 1
                    dials += 1
                    self.placement.forget(spec, key)
                    await clock.sleep(delay)
                    rerouted = await self._reroute(spec, key)
                    if rerouted is None:
                        return await self._serve_here(spec, key, self._call_frame(
                            request_id, spec, key, method, payload, deadline, headers), deadline)
                    address, hops = rerouted, 0
                    route_start, path = rerouted, None
                    continue
                except TimeoutError:
                    raise CallTimeout(
                        f"call {spec.name}/{key}.{method}: no connection to {address} "
                        f"within the call's timeout (request {request_id})",
                        definite=not sent, request_id=request_id,
                    ) from None
                frame = Call(request_id, spec.name, key, method, payload,
                             max(1, int(remaining * 1000)), headers)
                try:
                    answer = await conn.request(frame, remaining)
                except (ConnectionBroken, ConnectionClosed) as exc:
                    sent = sent or not exc.definite
                    resends += 1
                    if resends > MAX_RESENDS:
                        raise NodeUnavailable(
                            f"{address} lost the connection {resends} times during "
                            f"{spec.name}/{key}.{method}: {exc.message}",
                            definite=not sent, request_id=request_id,
                        ) from exc
                    self.resends += 1
                    tracing.event("phoenix.resend", {"phoenix.error": exc.message})
                    continue
                if isinstance(answer, Reply):
                    return answer.payload
                if isinstance(answer, Redirect):
                    hops += 1
                    if path is None:
                        path = [route_start]
                    path.append(answer.owner or answer.address)
                    if hops > MAX_REDIRECTS:
                        # A loop: the members' views disagree while a join, a leave or a
                        # failover spreads. Nothing ran; wait for them to converge and route
                        # afresh from this node's own view, until the deadline.
                        backoff = reroute_delay(reroutes, deadline - clock.monotonic())
                        if backoff is None:
                            raise NodeUnavailable(
                                f"{spec.name}/{key}: more than {MAX_REDIRECTS} redirects "
                                f"({' -> '.join(path)}; last to {answer.owner} at "
                                f"{answer.address}); the cluster's views disagreed until the "
                                "call's deadline",
                                definite=not sent, request_id=request_id,
                            )
                        reroutes += 1
                        self.placement.forget(spec, key)
                        await clock.sleep(backoff)
                        rerouted = await self._reroute(spec, key)
                        if rerouted is None:
                            return await self._serve_here(spec, key, self._call_frame(
                                request_id, spec, key, method, payload, deadline, headers),
                                deadline)
                        address, hops = rerouted, 0
                        route_start, path = rerouted, None
                        continue
                    self.redirects_followed += 1
                    tracing.event("phoenix.redirect", {"phoenix.redirect.owner": answer.owner,
                                                       "phoenix.redirect.address": answer.address})
                    address = answer.address
                    if answer.owner == self.self_name:
                        # The home placed the agent on this very node.
                        return await self._serve_here(spec, key, frame, deadline)
                    if answer.owner:
                        self.placement.learn(spec, key, answer.owner)
                    continue
                error = error_from_frame(answer)
                backoff = reroute_delay(reroutes, deadline - clock.monotonic())
                if backoff is not None and resend_elsewhere(error):
                    # The agent's partition is changing hands (nothing ran, or a change
                    # the next leader answers from its reply window): route it again
                    # from a fresh view.
                    sent = sent or not error.definite
                    self.placement.forget(spec, key)
                    await clock.sleep(backoff)
                    reroutes += 1
                    rerouted = await self._reroute(spec, key)
                    if rerouted is not None:
                        address = rerouted
                        continue
                    return await self._serve_here(spec, key, self._call_frame(
                        request_id, spec, key, method, payload, deadline, headers), deadline)
                raise error
        except PhoenixError as exc:
            if sent and exc.definite:
                # This attempt did nothing, but an earlier one reached the owner and may
                # have run (its connection broke, or the owner lost its lead while it
                # committed): the outcome is unknown.
                raise _maybe_ran(exc) from None
            raise

    async def _reroute(self, spec: KindSpec, key: str) -> str | None:
        """Where ``key`` lives in this node's current view: an address, or ``None`` when
        this node serves it."""
        address = self.remote_address(spec, key)
        if address is PLACE:
            return await self.resolve(spec, key)
        return address if isinstance(address, str) else None

    def _call_frame(self, request_id: int, spec: KindSpec, key: str, method: str,
                    payload: bytes, deadline: float, headers: dict[str, str]) -> Call:
        remaining_ms = int((deadline - self._clock.monotonic()) * 1000)
        return Call(request_id, spec.name, key, method, payload, max(1, remaining_ms), headers)

    async def _serve_here(self, spec: KindSpec, key: str, frame: Call, deadline: float) -> bytes:
        if not spec.hashed:
            self.placement.pinned_here.add((spec.name, key))
        future = self.runtime.submit(spec, key, frame.method, frame.payload, True, deadline,
                                     frame.request_id, dedup=True,
                                     chain=frame.headers.get(CHAIN_HEADER))
        assert future is not None
        return await wait_result(self.runtime, future,
                                 max(deadline - self._clock.monotonic(), 0.001), frame)

    async def cast(self, spec: KindSpec, key: str, method: str, payload: bytes,
                   request_id: int, address: str, timeout_s: float, *,
                   acknowledged: bool = True) -> None:
        """Queue a cast at the owner at ``address``; returns once the owner acknowledged
        that it is in the agent's mailbox (``remote_cast.py``), or raises why not.

        Without ``acknowledged``, returns once the frame is queued to send: a refusal
        is only logged and counted (as dropped) by the owner.
        """
        if acknowledged:
            await send_cast(self, spec, key, method, payload, request_id, address,
                            timeout_s)
            return
        conn = await self._connect(address, False, request_id)
        tracer = self.tracer
        await conn.send(Cast(request_id, spec.name, key, method, payload,
                             NO_HEADERS if tracer is None else tracer.inject()),
                        timeout_s=timeout_s)

    async def connect(self, address: str, sent: bool, request_id: int) -> PeerConnection:
        """A connection to ``address``; ``sent``: whether this request may already have
        left (then a failure to connect is indefinite)."""
        return await self._connect(address, sent, request_id)

    async def _connect(self, address: str, sent: bool, request_id: int) -> PeerConnection:
        try:
            return await self.peers.connection(address)
        except NodeUnavailable as exc:
            if sent:  # it may have run before the connection broke
                raise NodeUnavailable(exc.message, definite=False,
                                      request_id=request_id) from exc
            exc.request_id = request_id
            raise

    # ----------------------------------------------------------------- inbound

    def _dropped(self, peer: PeerConnection, frame: Cast, exc: PhoenixError) -> None:
        report_refused(self.runtime.bus, self.self_name, peer, frame, exc)

    def try_now(self, peer: PeerConnection, frame: Call | Cast,
                answer: Callable[[Reply | Error | Redirect], None]) -> bool:
        """The transport's fast path: take a frame for a local agent without a task.

        Queues the message in the agent's mailbox on the spot and answers from a callback
        on its result. Returns ``False`` for what needs the async path (casts to forward
        to another owner, a full mailbox).
        """
        rid = frame.request_id
        answers = isinstance(frame, Call) or frame.timeout_ms > 0
        try:
            placement = self.placement
            spec = placement.spec_for(frame.kind)
            if placement.admitting(spec, frame.key):
                return False  # queue behind the frame being admitted (order per agent)
            where = placement.admit(spec, frame.key)
            if where is PLACE:
                return False
            if isinstance(where, tuple):
                if isinstance(frame, Cast):
                    forwarded = placement.forward_cast(spec, frame.key, rid, frame.method,
                                                       frame.payload, where[1], acked=answers)
                    if forwarded is not None:
                        forwarded.add_done_callback(partial(acknowledge, rid, answer))
                    return True
                if placement.forwarding(spec, frame.key):
                    return False  # the redirect waits for the casts forwarded before it
                answer(Redirect(rid, where[0], where[1]))
                return True
            if isinstance(frame, Cast):
                if not answers:
                    self.runtime.submit(spec, frame.key, frame.method, frame.payload, False,
                                        0.0, rid)
                elif self.runtime.casts.try_submit(spec, frame.key, frame.method,
                                                  frame.payload, rid):
                    answer(Reply(rid, b""))
                else:
                    return False  # a full mailbox: wait for room in a task
                return True
            future = self.runtime.submit(
                spec, frame.key, frame.method, frame.payload, True,
                self._clock.monotonic() + frame.timeout_ms / 1000, rid, dedup=True,
                chain=frame.headers.get(CHAIN_HEADER),
            )
        except Overloaded:
            if answers:
                return False  # a full mailbox: wait for room in a task
            assert isinstance(frame, Cast)
            self._dropped(peer, frame, Overloaded(f"mailbox of {frame.kind}/{frame.key} "
                                                  "is full"))
            return True
        except PhoenixError as exc:
            if answers:
                answer(error_frame(rid, exc))
            else:
                assert isinstance(frame, Cast)
                self._dropped(peer, frame, exc)
            return True
        assert future is not None

        def done(result: asyncio.Future[bytes]) -> None:
            if result.cancelled():
                answer(error_frame(rid, NodeUnavailable("the owner stopped", definite=False)))
                return
            exc = result.exception()
            if exc is None:
                answer(Reply(rid, result.result()))
            elif isinstance(exc, PhoenixError):
                answer(error_frame(rid, exc))
            else:
                answer(error_frame(rid, PhoenixInternalError(repr(exc))))

        future.add_done_callback(done)
        return True


def _maybe_ran(exc: PhoenixError) -> PhoenixError:
    """``exc`` (definite for the attempt that raised it) made indefinite for the call: an
    earlier attempt of the same request may have run. Same type, so handlers that catch
    ``NotLeader`` or ``Overloaded`` still do; ``definite`` says the outcome is unknown."""
    exc.definite = False
    exc.message = (f"{exc.message} (an earlier attempt of this request reached the owner "
                   "and may have run)")
    exc.args = (exc.message,)
    return exc
