"""Sending a cast to the node that hosts its agent, and knowing it arrived.

A remote cast travels as a :class:`~.._wire.messages.Cast` with ``timeout_ms`` set: the
owner answers once the message is in the agent's mailbox (waiting, up to that time, for
room in a full one), or with the error that kept it out. So ``await ref.m.cast()``
returning means the message is queued at its owner, and every refusal reaches the
sender as a typed error: nothing is dropped silently on the way.

The cost is one round trip per cast for a sender that awaits each one; senders that cast
from several tasks pipeline them over the same connection.

Failures, as for calls (``dispatch.py``): before the frame left this node they are
definite; a connection lost after it left makes the outcome unknown (``NodeUnavailable``
with ``definite=False``; a cast is not resent, since the owner does not de-duplicate
casts). A definite ``NotLeader``/``NoQuorum`` (the partition is changing hands), an
owner that cannot be reached, or one whose Goodbye says it never read the cast (a
graceful leave) is routed again from a fresh view, like a call, until the deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .._telemetry.tracing import NO_HEADERS
from .._transport.base import ConnectionBroken, ConnectionClosed, PeerConnection
from .._transport.tasks import fail_after
from .._wire.errors import error_from_frame
from .._wire.messages import Cast, Redirect, Reply
from ..errors import CallTimeout, NodeUnavailable
from .reroute import PLACE, reroute_delay, turned_away_by_peer

if TYPE_CHECKING:
    from .._telemetry.tracing import NodeTracer
    from .kinds import KindSpec
    from .placement import PlacementService
    from .runtime import AgentRuntime

__all__ = ["CastRouter", "send_cast"]

MAX_HOPS = 4
"""Redirects followed by one cast (owners forward casts, so they rarely redirect)."""
MAX_RETRIES = 3
"""Fresh connections tried for a cast whose frame never left this node."""
OWNER_SHARE = 0.9
"""Share of the cast's remaining time the owner may wait for mailbox room."""


class CastRouter(Protocol):
    """What a cast asks of the agent router (``dispatch.py``): connections, routes."""

    @property
    def self_name(self) -> str: ...

    @property
    def runtime(self) -> AgentRuntime: ...

    @property
    def tracer(self) -> NodeTracer | None: ...

    @property
    def placement(self) -> PlacementService: ...

    def remote_address(self, spec: KindSpec, key: str) -> str | object | None: ...

    async def resolve(self, spec: KindSpec, key: str) -> str | None: ...

    async def connect(self, address: str, sent: bool, request_id: int) -> PeerConnection: ...


async def send_cast(router: CastRouter, spec: KindSpec, key: str, method: str, payload: bytes,
                    request_id: int, address: str, timeout_s: float) -> None:
    """Queue a cast at the owner at ``address``; return once the owner acknowledged it.

    Raises:
        Overloaded: the agent's mailbox stayed full for ``timeout_s``; nothing was queued.
        AgentNotFound, SerializationError, NodeClosed...: the owner refused it (definite).
        CallTimeout: no acknowledgement within ``timeout_s`` (``definite`` says whether
            the frame had left this node).
        NodeUnavailable: the owner went away (``definite=False`` once the frame was sent).
    """
    runtime = router.runtime
    clock = runtime.clock
    tracer = router.tracer
    headers = NO_HEADERS if tracer is None else tracer.inject()
    where = f"{spec.name}/{key}.{method}"
    deadline = clock.monotonic() + timeout_s
    hops = retries = reroutes = 0
    while True:
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            raise CallTimeout(f"cast {where} was not acknowledged within {timeout_s:g}s "
                              f"(request {request_id})", definite=True, request_id=request_id)
        try:
            async with fail_after(clock, remaining):
                conn = await router.connect(address, False, request_id)
        except TimeoutError:
            raise CallTimeout(f"cast {where}: no connection to {address} within "
                              f"{timeout_s:g}s (request {request_id})", definite=True,
                              request_id=request_id) from None
        except NodeUnavailable:
            # Nothing left this node: the owner is gone, or leaving and no longer
            # accepting. Its keys are someone else's soon; route afresh until the deadline.
            delay = reroute_delay(reroutes, deadline - clock.monotonic())
            if delay is None:
                raise
            reroutes += 1
            rerouted = await _route_afresh(router, spec, key, delay)
            if rerouted is None:
                break
            address = rerouted
            continue
        # The owner gives up waiting for room a little before we stop waiting for its
        # answer, so a full mailbox comes back as a definite Overloaded, not a timeout.
        frame = Cast(request_id, spec.name, key, method, payload, headers,
                     max(1, int(remaining * OWNER_SHARE * 1000)))
        try:
            answer = await conn.request(frame, remaining)
        except (ConnectionBroken, ConnectionClosed) as exc:
            if not exc.definite:
                raise NodeUnavailable(
                    f"connection to {address} lost before it acknowledged cast {where}: "
                    f"it may or may not be queued ({exc.message})",
                    definite=False, request_id=request_id) from exc
            # Never queued (it never left, or the owner's Goodbye said it did not read
            # it): try the same owner again a few times, then route afresh.
            retries += 1
            if retries <= MAX_RETRIES:
                continue
            delay = reroute_delay(reroutes, deadline - clock.monotonic())
            if delay is None:
                raise NodeUnavailable(f"cast {where}: {address} is unreachable "
                                      f"({exc.message})", definite=True,
                                      request_id=request_id) from exc
            retries = 0
        else:
            if isinstance(answer, Reply):
                return
            delay = reroute_delay(reroutes, deadline - clock.monotonic())
            if isinstance(answer, Redirect):
                hops += 1
                if hops <= MAX_HOPS and answer.owner != router.self_name:
                    if answer.owner:
                        router.placement.learn(spec, key, answer.owner)
                    address = answer.address
                    continue
                # A loop (the views disagree while a membership change spreads), or the
                # owner named is this node: route afresh from this node's own view, until
                # the deadline.
                if delay is None:
                    raise NodeUnavailable(f"cast {where}: redirected {hops} times (last to "
                                          f"{answer.owner}); the cluster's views disagreed "
                                          "until the cast's deadline",
                                          definite=True, request_id=request_id)
                hops = 0
            else:
                error = error_from_frame(answer)
                if not turned_away_by_peer(error) or delay is None:
                    raise error
        # Nothing was queued (the agent's partition is changing hands): route it again.
        reroutes += 1
        rerouted = await _route_afresh(router, spec, key, delay)
        if rerouted is None:
            break
        address = rerouted
    # The key is this node's now: queue the cast here.
    await runtime.casts.submit(spec, key, method, payload, request_id,
                              max(deadline - clock.monotonic(), 0.001))


async def _route_afresh(router: CastRouter, spec: KindSpec, key: str,
                        delay: float) -> str | None:
    """After ``delay``, the address of the key's owner in this node's current view, or
    ``None`` when that owner is this node."""
    router.placement.forget(spec, key)
    await router.runtime.clock.sleep(delay)
    rerouted = router.remote_address(spec, key)
    if rerouted is PLACE:
        rerouted = await router.resolve(spec, key)
    return rerouted if isinstance(rerouted, str) else None
