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
