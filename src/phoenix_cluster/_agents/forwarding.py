"""Forwarding casts to the member that now hosts their agent, in arrival order.

A member that no longer hosts an agent (it handed it off, or the agent lives elsewhere)
forwards the casts that still reach it, since their sender has no reply to redirect.
Forwards go one at a time per agent, each acknowledged once queued at the host
(``$placement.deliver``), and a call redirected away from here first waits for the
forwards before it, so a sender that follows the redirect cannot overtake its own casts.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .._telemetry.bus import TelemetryBus
from .._transport.tasks import TaskSet
from ..errors import NodeUnavailable, PhoenixError
from . import handoff as wire
from .flow import report_drop
from .kinds import KindSpec

__all__ = ["CastForwarder"]

Key = tuple[str, str]


class _Forward:
    """A cast on its way to the agent's host; ``done`` settles for an acknowledged one."""

    __slots__ = ("address", "deliver", "done")

    def __init__(self, address: str, deliver: wire.Deliver,
                 done: asyncio.Future[None] | None) -> None:
        self.address = address
        self.deliver = deliver
        self.done = done


_Channel = tuple[deque[_Forward], asyncio.Event]


class CastForwarder:
    """Per agent, a queue of casts forwarded to its host, drained by one task.

    Args:
        client: calls the host's ``$placement.deliver``.
        bus: telemetry (a dropped forward).
        tasks: owns the draining tasks.
    """

    def __init__(self, client: wire.PlacementClient, self_name: str, bus: TelemetryBus,
                 tasks: TaskSet) -> None:
        self.client = client
        self.self_name = self_name
        self.bus = bus
        self._tasks = tasks
        self._channels: dict[Key, _Channel] = {}

    def forward_cast(self, spec: KindSpec, key: str, request_id: int, method: str,
                     payload: bytes, address: str, *, acked: bool = False,
                     ) -> asyncio.Future[None] | None:
        """Forward a cast for an agent hosted at ``address``, after the earlier ones.

        With ``acked`` the returned future settles once the host queued the cast, or
        with the error that stopped it (for the sender's acknowledgement); without, a
        cast the host refused is reported as dropped.
        """
        k = (spec.name, key)
        channel = self._channels.get(k)
        if channel is None:
            channel = self._channels[k] = (deque(), asyncio.Event())
            self._tasks.spawn(self._drain(k, channel), name="phx-placement-relay")
        done = asyncio.get_running_loop().create_future() if acked else None
        channel[0].append(_Forward(address, wire.Deliver(spec.name, key, method, payload,
                                                         request_id), done))
        return done

    def forwarding(self, spec: KindSpec, key: str) -> bool:
        return (spec.name, key) in self._channels

    async def forwarded(self, spec: KindSpec, key: str) -> None:
        """Wait until the casts forwarded so far for this agent are queued at its host."""
        channel = self._channels.get((spec.name, key))
        if channel is not None:
            await channel[1].wait()

    async def _drain(self, k: Key, channel: _Channel) -> None:
        queue, done = channel
        rpc, timeout_s = self.client.rpc, self.client.timeout_s
        assert rpc is not None  # only a node in a cluster forwards
        try:
            while queue:
                forward = queue[0]
                deliver, acked = forward.deliver, forward.done
                try:
                    await rpc.call(forward.address, "placement", "deliver",
                                   wire.encode(deliver), timeout_s)
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
            del self._channels[k]
            done.set()
