"""The send queue's writer: a connection that closed while frames waited fails as one."""

from __future__ import annotations

import asyncio

import pytest

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.sendqueue import SendQueue


async def test_a_write_after_the_transport_closed_is_a_connection_error() -> None:
    # uvloop raises RuntimeError on a write to a closed transport and asyncio drops the
    # bytes with a warning; the writer must report an OSError instead, which the
    # connection turns into "connection broken" for every waiting call.
    accepted: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, server_side: asyncio.StreamWriter) -> None:
        accepted.append(server_side)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        queue = SendQueue(limit=10, batch_bytes=1 << 16, max_frame_bytes=1 << 20,
                          clock=Env().clock, bus=TelemetryBus(), metadata=dict)
        writer.transport.abort()
        queue.put(b"frame")
        with pytest.raises(ConnectionResetError, match="closed before the write"):
            await queue.run(stop_when_empty=lambda: False, writer=writer)
        assert queue.frames_sent == 0
        writer.close()
        await writer.wait_closed()
    finally:
        for server_side in accepted:
            server_side.close()
        server.close()
        await server.wait_closed()


async def test_a_frame_asked_out_at_once_is_written_at_once_only_behind_nothing() -> None:
    accepted: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()
    server_sides: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, server_side: asyncio.StreamWriter) -> None:
        accepted.set_result(reader)
        server_sides.append(server_side)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    queue = SendQueue(limit=10, batch_bytes=1 << 16, max_frame_bytes=1 << 20,
                      clock=Env().clock, bus=TelemetryBus(), metadata=dict)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    running = asyncio.create_task(queue.run(stop_when_empty=lambda: False, writer=writer))
    try:
        queue.put(b"first frame", now=True)  # the writer has not started: queued
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (queue.writes, len(queue)) == (1, 0)
        queue.put(b"second frame", now=True)  # the writer is idle: written right here
        assert (queue.writes, len(queue)) == (2, 0)
        queue.put(b"third frame")
        queue.put(b"fourth frame", now=True)  # behind a queued frame: queued, in order
        assert (queue.writes, len(queue)) == (2, 2)
        async with asyncio.timeout(5.0):
            reader, data = await accepted, b""
            while b"fourth frame" not in data:
                data += await reader.read(1 << 16)
        assert queue.writes == 3  # the last two together, by the writer
        bodies = [b"first frame", b"second frame", b"third frame", b"fourth frame"]
        assert [data.index(body) for body in bodies] == sorted(
            data.index(body) for body in bodies)
        assert queue.frames_sent == 4
    finally:
        running.cancel()
        writer.close()
        for server_side in server_sides:
            server_side.close()
        server.close()
        await server.wait_closed()
