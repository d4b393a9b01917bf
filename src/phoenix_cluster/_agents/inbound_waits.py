"""Agent messages from peers that cannot be taken on the spot, and waiting for results.

The router takes most frames for a local agent without a task (``Router.try_now``,
``dispatch.py``). The rest run here, each in a task the transport starts: a frame that
waits for its agent's admission (a claim at the home, a handoff, the casts forwarded
before it), for room in a full mailbox, or for a forward to the agent's new host, and
calls that wait for their result with a deadline of their own (:func:`wait_result`,
which also serves a call the router ends up serving on this node). Frames for one agent
are admitted in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._transport.base import PeerConnection
from .._wire.errors import error_frame
from .._wire.messages import Call, Cast, Error, Redirect, Reply
from ..errors import CallTimeout, NodeClosed, NodeUnavailable, PhoenixError, PhoenixInternalError
from .chain import CHAIN_HEADER
from .flow import report_drop
from .reroute import PLACE

if TYPE_CHECKING:
    from .._foundation.env import Clock
    from .placement import PlacementService
    from .runtime import AgentRuntime

__all__ = ["WaitingRouter", "acknowledge", "report_refused", "serve_waiting", "wait_result"]


class WaitingRouter(Protocol):
    """What a waiting frame asks of the router (``dispatch.py``)."""

    @property
    def self_name(self) -> str: ...

    @property
    def placement(self) -> PlacementService: ...

    @property
    def runtime(self) -> AgentRuntime: ...


class ResultHost(Protocol):
    """Whose clock a result is waited on, and whose name a timeout names."""

    @property
    def clock(self) -> Clock: ...

    @property
    def node_name(self) -> str: ...


async def serve_waiting(
    router: WaitingRouter, peer: PeerConnection, frame: Call | Cast
) -> Reply | Error | Redirect | None:
    """Serve a Call or Cast for an agent from a peer that :meth:`try_now` could not
    take on the spot (the transport runs each in its own task; node services never
    come here: ``_transport/rpc.py``)."""
    try:
        placement = router.placement
        spec = placement.spec_for(frame.kind)
        forwarded: asyncio.Future[None] | None = None
        future: asyncio.Future[bytes] | None = None
        # Frames for one agent are admitted in arrival order, even when one of them
        # must wait (a claim at the home, a handoff, room in a full mailbox): a
        # later frame may not overtake.
        async with placement.admission(spec, frame.key):
            where = placement.admit(spec, frame.key)
            if where is PLACE:
                where = await placement.admit_async(spec, frame.key, peer.peer_name)
            if isinstance(where, tuple):
                if isinstance(frame, Cast):
                    # Forward casts for the sender: it has no reply to redirect.
                    forwarded = placement.forward_cast(
                        spec, frame.key, frame.request_id, frame.method, frame.payload,
                        where[1], acked=frame.timeout_ms > 0)
                else:
                    await placement.forwarded(spec, frame.key)
                    return Redirect(frame.request_id, where[0], where[1])
            elif isinstance(frame, Cast):
                if frame.timeout_ms > 0:
                    await router.runtime.casts.submit(spec, frame.key, frame.method,
                                                   frame.payload, frame.request_id,
                                                   frame.timeout_ms / 1000)
                else:
                    router.runtime.submit(spec, frame.key, frame.method, frame.payload,
                                        False, 0.0, frame.request_id)
            else:
                future = await router.runtime.casts.submit_when_room(
                    spec, frame.key, frame.method, frame.payload,
                    router.runtime.clock.monotonic() + frame.timeout_ms / 1000, frame.request_id,
                    frame.headers.get(CHAIN_HEADER))
        if isinstance(frame, Cast):
            if forwarded is not None:
                await forwarded
            return Reply(frame.request_id, b"") if frame.timeout_ms > 0 else None
        timeout_s = frame.timeout_ms / 1000
        assert future is not None
        payload = await wait_result(router.runtime, future, timeout_s, frame)
        return Reply(frame.request_id, payload)
    except PhoenixError as exc:
        if isinstance(frame, Cast) and not frame.timeout_ms:
            report_refused(router.runtime.bus, router.self_name, peer, frame, exc)
            return None
        return error_frame(frame.request_id, exc)


async def wait_result(host: ResultHost, future: asyncio.Future[bytes], timeout_s: float,
                      call: Any) -> bytes:
    """Wait for ``future`` up to ``timeout_s`` of the node's clock, without cancelling
    it (it may be shared with a resent call)."""
    waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    node_name = host.node_name

    def relay(done: asyncio.Future[bytes]) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.set_exception(NodeClosed(f"node {node_name} stopped"))
        elif (exc := done.exception()) is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())

    def expire() -> None:
        if not waiter.done():
            waiter.set_exception(CallTimeout(
                f"call {call.kind}/{call.key}.{call.method} timed out on {node_name}",
                request_id=call.request_id,
            ))

    future.add_done_callback(relay)
    timer = host.clock.call_later(timeout_s, expire)
    try:
        return await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(relay)


def report_refused(bus: Any, self_name: str, peer: PeerConnection, frame: Cast,
                   exc: PhoenixError) -> None:
    """An unacknowledged cast (from an older peer) refused here: nobody to tell, so it
    is logged and counted as dropped."""
    report_drop(bus, self_name, "refused", frame.kind, frame.key, frame.method,
                f"from {peer.peer_name}: {exc.message}")


def acknowledge(request_id: int, answer: Callable[[Reply | Error | Redirect], None],
                 forwarded: asyncio.Future[None]) -> None:
    """Answer an acknowledged cast once its forward to the agent's host settled."""
    if forwarded.cancelled():
        answer(error_frame(request_id, NodeUnavailable("the forwarding node stopped",
                                                       definite=False)))
    elif (exc := forwarded.exception()) is not None:
        error = exc if isinstance(exc, PhoenixError) else PhoenixInternalError(repr(exc))
        answer(error_frame(request_id, error))
    else:
        answer(Reply(request_id, b""))
