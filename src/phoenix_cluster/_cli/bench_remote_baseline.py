"""The raw baseline of ``phx bench remote`` and ``phx bench compare``: bare frames, no Phoenix.

A bare asyncio request/response over one loopback TCP connection between this process and
a tiny echo server in a subprocess, with the same frames Phoenix sends (a 4-byte length and
a msgpack :class:`~phoenix_cluster._wire.messages.Call` carrying the same kind, key, method
and arguments as ``ref(BenchTarget, key).inc(1)``, answered by a
:class:`~phoenix_cluster._wire.messages.Reply` with the msgpack result). Both ends use
``asyncio.Protocol`` directly: no handshake, no tasks per message, no agents, no routing; a
burst of calls leaves in one write. It is the raw limit the Phoenix figures are judged
against.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from typing import Any, Protocol, cast

from .._agents.kinds import kind_spec
from .._wire.codec import WireCodec, decode_payload, encode_payload
from .._wire.frames import FrameDecoder, pack_frames
from .._wire.messages import Call, Reply
from .bench_agents import NODE_LOOP_ENV, BenchTarget
from .bench_cluster_harness import summarize
from .bench_local import LoopName, loop_factory

__all__ = ["IN_FLIGHT", "BaselineSizes", "echo_server_main", "run_baseline"]

IN_FLIGHT = (1, 16, 256)
"""Calls in flight for the throughput rows (concurrent callers)."""


class BaselineSizes(Protocol):
    """How much work the baseline does (``RemoteBenchSizes`` has these)."""

    @property
    def latency_warmup(self) -> int: ...

    @property
    def latency_calls(self) -> int: ...

    def calls_for(self, in_flight: int) -> int: ...


# What ``ref(BenchTarget, key).inc(1)`` puts on the wire, for the baseline.
_KIND = kind_spec(BenchTarget).name
_ARGS = encode_payload(((1,), {}))
_CALL_TIMEOUT_MS = 5_000
_BASELINE_TIMEOUT_S = 600.0  # the whole baseline; it takes seconds


class _EchoServer(asyncio.Protocol):
    """Answers every Call with a Reply carrying a counter: what a node does, minus Phoenix."""

    def __init__(self) -> None:
        self._codec = WireCodec()
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        codec = self._codec
        out: list[bytes] = []
        for body in self._decoder.feed(data):
            msg = codec.decode(body)
            if type(msg) is Call:
                (by,), _kwargs = decode_payload(msg.payload)
                self._count += by
                out.append(codec.encode(Reply(msg.request_id, encode_payload(self._count))))
        if out and self._transport is not None:
            self._transport.write(pack_frames(out))


async def _serve_echo() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Serve until the parent closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def echo_server_main() -> None:
    """Entry point of the baseline's echo server subprocess (uvloop unless told not to)."""
    choice: LoopName = "asyncio" if os.environ.get(NODE_LOOP_ENV) == "asyncio" else "auto"
    _, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_echo())


class _EchoClient(asyncio.Protocol):
    """Sends Calls, matches Replies by request id; a burst of calls leaves in one write."""

    def __init__(self) -> None:
        self._codec = WireCodec()
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._out: list[bytes] = []
        self._next_id = 0
        self._loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the echo server closed the connection"))
        if not self.lost.done():
            self.lost.set_result(None)

    def call(self, key: str) -> asyncio.Future[Any]:
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = fut
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(self._codec.encode(
            Call(rid, _KIND, key, "inc", _ARGS, _CALL_TIMEOUT_MS)))
        return fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(pack_frames(out))

    def data_received(self, data: bytes) -> None:
        codec, pending = self._codec, self._pending
        for body in self._decoder.feed(data):
            msg = codec.decode(body)
            if type(msg) is Reply:
                fut = pending.pop(msg.request_id)
                if not fut.done():
                    fut.set_result(decode_payload(msg.payload))


async def run_baseline(
    sizes: BaselineSizes, node_env: dict[str, str], in_flight: tuple[int, ...] = IN_FLIGHT
) -> dict[str, Any]:
    """The raw figures: call latency, and calls/s with each of ``in_flight`` concurrent
    callers, against an echo server in a subprocess started with ``node_env``."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "from phoenix_cluster._cli.bench_remote_baseline import echo_server_main; "
        "echo_server_main()",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **node_env},
    )
    try:
        assert server.stdout is not None
        async with asyncio.timeout(30):
            line = await server.stdout.readline()
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"the baseline echo server did not start: {line!r}")
        port = int(line.split()[1])
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_connection(_EchoClient, "127.0.0.1", port)
        try:
            async with asyncio.timeout(_BASELINE_TIMEOUT_S):
                return await _measure_baseline(client, sizes, in_flight)
        finally:
            transport.close()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            async with asyncio.timeout(10):
                await server.wait()
        except TimeoutError:
            server.kill()
            await server.wait()


async def _measure_baseline(
    client: _EchoClient, sizes: BaselineSizes, in_flight: tuple[int, ...]
) -> dict[str, Any]:
    call = client.call
    for _ in range(sizes.latency_warmup):
        await call("latency")
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    gc.collect()
    for _ in range(sizes.latency_calls):
        started = clock()
        await call("latency")
        append(clock() - started)
    out: dict[str, Any] = {"call_latency": summarize(samples)}

    per_s: dict[str, float] = {}
    for n in in_flight:
        per_caller = max(1, sizes.calls_for(n) // n)

        async def caller(key: str, calls: int = per_caller) -> None:
            for _ in range(calls):
                await call(key)

        gc.collect()
        started_s = time.perf_counter()
        await asyncio.gather(*(caller(f"t{i}") for i in range(n)))
        per_s[str(n)] = n * per_caller / (time.perf_counter() - started_s)
    out["calls_per_s"] = per_s
    return out
