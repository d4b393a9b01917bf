"""A connection's bounded send queue and the single writer that drains it, coalescing.

Senders append encoded frame bodies; one writer task takes everything queued (up to
``write_batch_bytes``), frames it with ``pack_frames`` into one buffer, makes one
``write()`` and then awaits ``drain()``. Under load many frames share a syscall; when
idle a frame goes out on the writer's next turn, or at once when its sender asks
(``put(now=True)``: a frame that carries a batch of work already, a replication batch
or its reply) and nothing is queued or being drained before it. While the writer waits
in ``drain()`` (the peer reads slowly) the queue fills, and at ``limit`` frames senders
wait for room: that is the backpressure ``send``/``request`` turn into ``Overloaded``
after their timeout.

:meth:`put` itself never waits or refuses, so replies, pings and goodbyes (bounded by
other means) can always be queued; the bound is enforced by callers through
:meth:`wait_for_space`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping

from phoenix_cluster._foundation.env import Clock
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._wire.frames import HEADER_BYTES, pack_frames

from .tasks import fail_after

__all__ = ["SendQueue"]

_log = logging.getLogger("phoenix_cluster.transport")


class SendQueue:
    """Frame bodies waiting for the socket, plus the counters the statistics report.

    Args:
        limit: ``send_queue_frames``; :attr:`full` at this many.
        batch_bytes: ``write_batch_bytes``; the most joined into one write.
        metadata: telemetry metadata (``node``, ``peer``), built only when a handler is
            attached, since it is on the hot path.
    """

    __slots__ = ("_batch_bytes", "_bus", "_clock", "_max_frame", "_metadata", "_queue",
                 "_space", "_wakeup", "_writer", "bytes_sent", "frames_sent", "last_send",
                 "limit", "writes")

    def __init__(
        self,
        *,
        limit: int,
        batch_bytes: int,
        max_frame_bytes: int,
        clock: Clock,
        bus: TelemetryBus,
        metadata: Callable[[], Mapping[str, object]],
    ) -> None:
        self.limit = limit
        self._batch_bytes = batch_bytes
        self._max_frame = max_frame_bytes
        self._clock = clock
        self._bus = bus
        self._metadata = metadata
        self._queue: deque[bytes] = deque()
        self._space = asyncio.Event()  # set while len < limit (and after close)
        self._space.set()
        self._wakeup: asyncio.Future[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.last_send = clock.monotonic()
        self.frames_sent = self.bytes_sent = self.writes = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.limit

    def put(self, body: bytes, *, now: bool = False) -> None:
        """Queue one encoded body, whatever the length of the queue.

        ``now``: write it here if the writer is idle (nothing queued, nothing being
        drained): one ``write()`` for this frame alone, a loop turn sooner than the
        writer's. Otherwise it is queued like any other.
        """
        wakeup, writer = self._wakeup, self._writer
        if now and wakeup is not None and not wakeup.done() and not self._queue \
                and writer is not None and not writer.is_closing():
            try:
                self._write(writer, [body], len(body) + HEADER_BYTES)
                return
            except Exception as exc:  # queued instead: the writer's own write decides
                _log.debug("a write at once failed (%r); the writer takes the frame", exc)
        self._queue.append(body)
        if len(self._queue) >= self.limit:
            self._space.clear()
        self.wake()

    def wake(self) -> None:
        """Wake the writer (new data, or it should notice the connection is closing)."""
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def release_waiters(self) -> None:
        """The connection is closing: let every sender waiting for room re-check and fail."""
        self._space.set()

    async def wait_for_space(self, deadline: float, is_open: Callable[[], bool]) -> bool:
        """Wait until the queue is below its limit; ``False`` if ``deadline`` came first.

        Also returns (``True``) once ``is_open()`` turns false, so the caller can raise
        the connection's own error.
        """
        while len(self._queue) >= self.limit and is_open():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            try:
                async with fail_after(self._clock, remaining):
                    await self._space.wait()
            except TimeoutError:
                return False
        return True

    async def run(
        self, *, stop_when_empty: Callable[[], bool], writer: asyncio.StreamWriter
    ) -> None:
        """The writer loop. Returns once the queue is empty and ``stop_when_empty()``.

        Raises:
            OSError: the socket failed; the caller treats the connection as broken.
        """
        queue, loop, batch_bytes = self._queue, asyncio.get_running_loop(), self._batch_bytes
        self._writer = writer
        while True:
            if not queue:
                if stop_when_empty():
                    return  # everything queued before the close went out, Goodbye last
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            batch: list[bytes] = []
            size = 0
            while queue and size < batch_bytes:
                body = queue.popleft()
                batch.append(body)
                size += len(body) + HEADER_BYTES
            if len(queue) < self.limit:
                self._space.set()
            if writer.is_closing():
                # The peer went away while we waited (uvloop raises RuntimeError on a
                # write to a closed transport; asyncio would drop the bytes silently).
                raise ConnectionResetError("the connection closed before the write")
            self._write(writer, batch, size)
            await writer.drain()

    def _write(self, writer: asyncio.StreamWriter, batch: list[bytes], size: int) -> None:
        writer.write(pack_frames(batch, self._max_frame))
        self.last_send = self._clock.monotonic()
        self.writes += 1
        self.frames_sent += len(batch)
        self.bytes_sent += size
        bus, sent = self._bus, events.TRANSPORT_MESSAGE_SENT
        if sent in bus.listened:
            meta = self._metadata()
            for body in batch:
                bus.execute(sent, {"bytes": len(body) + HEADER_BYTES}, meta)

    def __repr__(self) -> str:
        return f"<SendQueue [{len(self._queue)}/{self.limit} frames, {self.writes} writes]>"
