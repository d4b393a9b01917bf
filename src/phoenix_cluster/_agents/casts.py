"""Casts on this node, and messages waiting for room in a full mailbox.

A cast is queued without waiting for its result: sent to the owner (acknowledged once
it is in the agent's mailbox there, ``remote_cast.py``) or queued here. A full mailbox
is waited on, up to the cast's timeout, before ``Overloaded``; calls from peers wait for
room the same way (:meth:`Casts.submit_when_room`). An agent that leaves this node while
a message waits for room sends the message after it (a definite ``NotLeader``: callers
route it again). Calls themselves stay in ``runtime.py``, on the path of every call.
"""

from __future__ import annotations

import asyncio
import itertools
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._telemetry import events
from ..errors import NodeClosed, NodeUnavailable, NotLeader, Overloaded, PhoenixError
from .interceptors import CallInfo
from .mailbox import KindRuntime, Message
from .reroute import PLACE, reroute_delay, turned_away

if TYPE_CHECKING:
    from .._foundation.env import Clock
    from .._foundation.settings import Settings
    from .._telemetry.bus import TelemetryBus
    from .._telemetry.tracing import NodeTracer
    from .cluster import CastOutbound, Homes
    from .interceptors import Interceptors
    from .kinds import KindSpec, MethodSpec

__all__ = ["Casts", "MessageHost", "no_host"]


class MessageHost(Protocol):
    """What casts ask of the agent runtime (``runtime.py``): its settings and wiring,
    and how it checks, encodes and queues a message."""

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def bus(self) -> TelemetryBus: ...

    @property
    def node_name(self) -> str: ...

    @property
    def hosts_agents(self) -> bool: ...

    @property
    def closing(self) -> bool: ...

    @property
    def router(self) -> CastOutbound | None: ...

    @property
    def placement(self) -> Homes | None: ...

    @property
    def tracer(self) -> NodeTracer | None: ...

    @property
    def interceptors(self) -> Interceptors: ...

    def kind(self, spec: KindSpec) -> KindRuntime: ...

    def next_request_id(self) -> int: ...

    def method_spec(self, spec: KindSpec, method: str) -> MethodSpec: ...

    def encode_payload(self, spec: KindSpec, method: MethodSpec, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> bytes: ...

    def from_peer(self, spec: KindSpec, method: str, payload: bytes) -> list[Any] | None: ...

    def try_enqueue(self, kr: KindRuntime, key: str, msg: Message) -> bool: ...

    def submit(self, spec: KindSpec, key: str, method: str, payload: bytes,
               want_reply: bool, deadline: float, request_id: int, *,
               dedup: bool = False, chain: str | None = None,
               ) -> asyncio.Future[bytes] | None: ...


class Casts:
    """Sends casts, queues casts from peers, and waits for room in full mailboxes.

    Args:
        host: the node's agent runtime.
    """

    __slots__ = ("_host",)

    def __init__(self, host: MessageHost) -> None:
        self._host = host

    # ----------------------------------------------------------------- sending

    async def send(
        self, spec: KindSpec, key: str, method: str, args: tuple[Any, ...],
        kwargs: dict[str, Any], timeout: float | None = None, *,
        acknowledged: bool = True,
    ) -> None:
        """Queue a message without waiting for its result.

        Returns once the message is in the agent's mailbox, on this node or (acknowledged
        by it) on the owner's. A full mailbox is waited on, up to ``timeout`` (default
        ``call_timeout_s``), before ``Overloaded``. Without ``acknowledged``
        (``MethodRef.cast_unacknowledged``) it never waits: a remote cast returns once
        queued to send, a local one fails at once with ``Overloaded`` when the mailbox
        is full.
        """
        host = self._host
        if host.interceptors.outgoing:
            await host.interceptors.run(
                CallInfo(spec.name, key, method, args, kwargs, host.node_name, "outgoing",
                         True),
                partial(self._send, spec, key, method, args, kwargs, timeout, acknowledged))
            return
        await self._send(spec, key, method, args, kwargs, timeout, acknowledged)

    async def _send(
        self, spec: KindSpec, key: str, method: str, args: tuple[Any, ...],
        kwargs: dict[str, Any], timeout: float | None, acknowledged: bool,
    ) -> None:
        host = self._host
        clock = host.clock
        method_spec = host.method_spec(spec, method)
        payload = host.encode_payload(spec, method_spec, args, kwargs)
        request_id = host.next_request_id()
        timeout_s = host.settings.call_timeout_s if timeout is None else timeout
        router = host.router
        msg = Message(method, payload, None, 0.0, request_id)
        deadline = clock.monotonic() + timeout_s
        for attempt in itertools.count():
            remaining = max(deadline - clock.monotonic(), 0.001)
            if router is not None:
                address = router.remote_address(spec, key)
                if address is PLACE:
                    address = await router.resolve(spec, key)
                await router.keep_order(spec, key, cast(str | None, address), True)
                if address is not None:
                    await router.cast(spec, key, method, payload, request_id,
                                      cast(str, address), remaining,
                                      acknowledged=acknowledged)
                    return
            if not host.hosts_agents:
                raise no_host(spec, key)
            kr = host.kind(spec)
            if not host.try_enqueue(kr, key, msg):
                if not acknowledged:  # fire and forget never waits
                    self.overloaded(kr, key)
                    raise Overloaded(f"mailbox of {spec.name}/{key} is full (mailbox_limit "
                                     f"{kr.mailbox_limit:,}); nothing was queued",
                                     request_id=request_id)
                try:
                    await self.enqueue_when_room(kr, key, msg, remaining)
                except PhoenixError as exc:
                    # The agent moved away while we waited for room: route it again.
                    delay = reroute_delay(attempt, deadline - clock.monotonic())
                    if not turned_away(exc) or delay is None:
                        raise
                    await clock.sleep(delay)
                    continue
            if host.tracer is not None:
                host.tracer.local_cast(request_id)
            return

    # ----------------------------------------------------------------- from peers

    async def submit(self, spec: KindSpec, key: str, method: str, payload: bytes,
                     request_id: int, timeout_s: float) -> None:
        """Queue a cast from a peer that waits for the acknowledgement (the inbound path),
        waiting up to ``timeout_s`` for room in a full mailbox.

        Raises:
            AgentNotFound, Overloaded, NodeClosed: refused; nothing was queued.
        """
        host = self._host
        decoded = host.from_peer(spec, method, payload)
        kr = host.kind(spec)
        msg = Message(method, payload, None, 0.0, request_id, decoded=decoded)
        if not host.try_enqueue(kr, key, msg):
            await self.enqueue_when_room(kr, key, msg, timeout_s)

    def try_submit(self, spec: KindSpec, key: str, method: str, payload: bytes,
                   request_id: int) -> bool:
        """Queue a cast from a peer if its agent's mailbox has room (the fast path);
        ``False``: it is full (wait with :meth:`submit`).

        Raises:
            AgentNotFound, NodeClosed: refused; nothing was queued.
        """
        host = self._host
        decoded = host.from_peer(spec, method, payload)
        return host.try_enqueue(host.kind(spec), key,
                                Message(method, payload, None, 0.0, request_id, decoded=decoded))

    # ----------------------------------------------------------------- room

    async def submit_when_room(self, spec: KindSpec, key: str, method: str, payload: bytes,
                               deadline: float, request_id: int,
                               chain: str | None = None) -> asyncio.Future[bytes]:
        """Submit a call from a peer (with de-duplication), waiting until ``deadline``
        for room in a full mailbox.

        Raises:
            AgentNotFound, Overloaded, NodeClosed: refused; nothing was queued.
        """
        host = self._host
        kr = host.kind(spec)
        clock = host.clock
        while True:
            try:
                future = host.submit(spec, key, method, payload, True, deadline, request_id,
                                     dedup=True, chain=chain)
            except Overloaded:
                if await kr.room.wait(key, clock, deadline - clock.monotonic()):
                    self._check_still_here(kr, key)
                    continue
                self.overloaded(kr, key)
                raise
            assert future is not None
            return future

    def _check_still_here(self, kr: KindRuntime, key: str) -> None:
        """After a wait for room: the agent must still be active here, or the message
        goes to wherever it went (a migration or a lost partition stopped it here).

        Raises:
            NodeClosed: this node is shutting down.
            NotLeader: (definite) the agent left this node while the message waited;
                callers route it again.
        """
        host = self._host
        if host.closing:
            raise NodeClosed(f"node {host.node_name} is shutting down")
        if host.placement is not None and not kr.workers and key not in kr.activations:
            raise NotLeader(f"{kr.spec.name}/{key} left {host.node_name} while a message "
                            "waited for room in its mailbox; send it again", definite=True)

    async def enqueue_when_room(self, kr: KindRuntime, key: str, msg: Message,
                                timeout_s: float) -> None:
        """Wait for the agent to make room in its mailbox, then queue ``msg``.

        Raises:
            Overloaded: the mailbox stayed full for ``timeout_s``; nothing was queued.
        """
        host = self._host
        clock = host.clock
        deadline = clock.monotonic() + timeout_s
        while await kr.room.wait(key, clock, deadline - clock.monotonic()):
            self._check_still_here(kr, key)
            if host.try_enqueue(kr, key, msg):
                return
        self.overloaded(kr, key)
        raise Overloaded(
            f"mailbox of {kr.spec.name}/{key} stayed full (mailbox_limit "
            f"{kr.mailbox_limit:,}) for {timeout_s:.3g}s; nothing was queued",
            request_id=msg.request_id,
        )

    def overloaded(self, kr: KindRuntime, key: str) -> None:
        """Count a message refused (or given up on) for a full mailbox."""
        bus = self._host.bus
        if bus.has_handlers(events.AGENT_OVERLOADED):
            bus.execute(
                events.AGENT_OVERLOADED,
                {"queued": float(kr.mailbox_limit)},
                {"node": self._host.node_name, "kind": kr.spec.name, "key": key},
            )


def no_host(spec: KindSpec, key: str) -> NodeUnavailable:
    """The error of a message sent from a client that knows no member."""
    return NodeUnavailable(
        f"no member node can host {spec.name}/{key}: this node is a client and knows no "
        "members (pass seeds)",
        definite=True,
    )
