"""Micro-benchmark of each transport protocol: TCP, HTTP/2 (h2) and QUIC (aioquic).

Two transports in one process talk over loopback, as in ``transport_roundtrip.py``, once
per protocol, with the same frames, handler and settings. For each it measures:

- sequential request/reply latency (one call in flight): p50 / p95;
- pipelined request/reply throughput with ``--window`` calls in flight;
- cast throughput (counted when the receiver's handler ran).

``--compare-http-libs`` also measures the alternative we did not build on: hypercorn
(server) + httpx (client), one HTTP/2 request per call over one connection, and checks
whether httpx can keep one request and its response streaming both ways at once (the
design the HTTP/2 transport needs). Needs ``pip install hypercorn 'httpx[http2]'``.

    .venv/bin/python benchmarks/transport_protocols.py [--seq 3000] [--calls 30000]
        [--window 256] [--casts 50000] [--payload 32] [--protocols tcp,http2,quic]
        [--loop asyncio|uvloop] [--compare-http-libs] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import platform
import socket
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import PeerConnection
from phoenix_cluster._transport.tcp import TcpTransport
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply

SECRET = b"benchmark-secret"


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


def transport_class(protocol: str) -> type[TcpTransport]:
    if protocol == "http2":
        from phoenix_cluster._transport.http2 import Http2Transport

        return Http2Transport
    if protocol == "quic":
        from phoenix_cluster._transport.quic import QuicTransport

        return QuicTransport
    return TcpTransport


async def measure(call: Callable[[], Coroutine[Any, Any, object]], args: argparse.Namespace
                  ) -> dict[str, float]:
    for _ in range(500):  # warm-up
        await call()
    latencies: list[float] = []
    for _ in range(args.seq):
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    remaining = args.calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.window)))
    pipelined = args.calls / (time.perf_counter() - t0)
    return {
        "p50_us": percentile(latencies, 0.50) * 1e6,
        "p95_us": percentile(latencies, 0.95) * 1e6,
        "seq_calls_per_s": 1 / statistics.fmean(latencies),
        "pipelined_calls_per_s": pipelined,
    }


async def run_protocol(protocol: str, args: argparse.Namespace) -> dict[str, float]:
    casts_seen = 0
    casts_done = asyncio.Event()

    async def handler(peer: PeerConnection, frame: Call | Cast) -> Reply | Error | Redirect | None:
        nonlocal casts_seen
        if isinstance(frame, Call):
            return Reply(request_id=frame.request_id, payload=frame.payload)
        casts_seen += 1
        if casts_seen == args.casts:
            casts_done.set()
        return None

    cls = transport_class(protocol)

    def make(name: str) -> TcpTransport:
        return cls(name, 1, SECRET, env=Env(), bus=TelemetryBus(),
                   max_frame_bytes=16 * 1024 * 1024, handler=handler,
                   send_queue_frames=max(10_000, args.window * 2))

    client, server = make("bench-client"), make("bench-server")
    try:
        t0 = time.perf_counter()
        conn = await client.connect(await server.start("127.0.0.1:0"))
        dial_ms = (time.perf_counter() - t0) * 1e3
        payload = b"x" * args.payload
        ids = itertools.count(1)

        async def call() -> object:
            return await conn.request(Call(request_id=next(ids), kind="bench", key="k",
                                           method="echo", payload=payload,
                                           timeout_ms=30_000), 30.0)

        result = await measure(call, args)
        t0 = time.perf_counter()
        for i in range(args.casts):
            await conn.send(Cast(request_id=i, kind="bench", key="k", method="note",
                                 payload=payload))
        await casts_done.wait()
        result["casts_per_s"] = args.casts / (time.perf_counter() - t0)
        result["dial_ms"] = dial_ms
        return result
    finally:
        await client.aclose()
        await server.aclose()


async def run_hypercorn_httpx(args: argparse.Namespace) -> dict[str, float]:
    """One HTTP/2 request per call: hypercorn serves, httpx calls, same frames inside."""
    import httpx
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    codec = WireCodec()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = [(b"content-type", b"application/x-phoenix-frames")]
        if scope["path"] == "/echo-stream":  # answer at once, then echo as the body arrives
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
                await send({"type": "http.response.body", "body": message.get("body", b""),
                            "more_body": more})
            return
        if scope["path"] == "/ready":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        call = codec.decode(body)
        assert isinstance(call, Call)
        reply = codec.encode(Reply(request_id=call.request_id, payload=call.payload))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    with socket.socket() as s:  # hypercorn binds inside serve(): choose the port first
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    config = Config()
    config.bind = [address]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.h2_max_concurrent_streams = max(100, args.window)
    config.keep_alive_max_requests = 2**62  # default 1000, then GOAWAY: keep one connection
    stop = asyncio.Event()
    # hypercorn types the ASGI scope as TypedDicts; this app reads it as a plain dict.
    asgi_app: Any = app
    server = asyncio.ensure_future(serve(asgi_app, config, shutdown_trigger=stop.wait))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, limits=limits,
                                 base_url=f"http://{address}") as client:
        for _ in range(500):  # wait for the server to listen
            with contextlib.suppress(httpx.ConnectError):
                await client.get("/ready")
                break
            await asyncio.sleep(0.01)
        payload = b"x" * args.payload
        ids = itertools.count(1)

        async def call() -> object:
            body = codec.encode(Call(request_id=next(ids), kind="bench", key="k",
                                     method="echo", payload=payload, timeout_ms=30_000))
            response = await client.post("/phoenix/v1", content=body)
            return codec.decode(response.content)

        result = await measure(call, args)
        result["full_duplex"] = float(await httpx_can_stream_both_ways(client))
    stop.set()
    await server
    return result


async def httpx_can_stream_both_ways(client: Any) -> bool:
    """Does httpx hand us the response while the request body is still being sent?"""
    gate, answered = asyncio.Event(), asyncio.Event()

    async def body() -> Any:
        yield b"first"
        await gate.wait()  # the rest of the request comes only after we saw a response
        yield b"rest"

    async def exchange() -> None:
        async with client.stream("POST", "/echo-stream", content=body()) as response:
            answered.set()
            await response.aread()

    task = asyncio.ensure_future(exchange())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(answered.wait(), 1.0)  # the server answered at once
    duplex = answered.is_set()
    gate.set()
    with contextlib.suppress(Exception):
        await task
    return duplex


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=3_000, help="sequential calls timed")
    parser.add_argument("--calls", type=int, default=30_000, help="pipelined calls")
    parser.add_argument("--window", type=int, default=256, help="calls in flight when pipelined")
    parser.add_argument("--casts", type=int, default=50_000, help="casts sent")
    parser.add_argument("--payload", type=int, default=32, help="payload bytes per message")
    parser.add_argument("--protocols", default="tcp,http2,quic")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--compare-http-libs", action="store_true",
                        help="also measure hypercorn + httpx (request per call)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    print(f"one process, loopback, {args.loop}, {args.payload} B payloads,"
          f" window {args.window}, Python {platform.python_version()}")
    print(f"{'protocol':16} {'p50 µs':>8} {'p95 µs':>8} {'seq/s':>8} {'pipelined/s':>12}"
          f" {'casts/s':>9} {'dial ms':>8}")
    results: dict[str, dict[str, float]] = {}
    jobs: list[tuple[str, Callable[[], Coroutine[Any, Any, dict[str, float]]]]] = [
        (p, functools.partial(run_protocol, p, args))
        for p in args.protocols.split(",")
    ]
    if args.compare_http_libs:
        jobs.append(("hypercorn+httpx", lambda: run_hypercorn_httpx(args)))
    for name, job in jobs:
        with asyncio.Runner(loop_factory=factory) as runner:
            r = runner.run(job())
        results[name] = r
        casts = f"{r['casts_per_s']:9,.0f}" if "casts_per_s" in r else f"{'-':>9}"
        dial = f"{r['dial_ms']:8.1f}" if "dial_ms" in r else f"{'-':>8}"
        print(f"{name:16} {r['p50_us']:8.0f} {r['p95_us']:8.0f} {r['seq_calls_per_s']:8,.0f}"
              f" {r['pipelined_calls_per_s']:12,.0f} {casts} {dial}")
        if "full_duplex" in r:
            print(f"{'':16} httpx streams request and response at once:"
                  f" {'yes' if r['full_duplex'] else 'no (response only after the body ends)'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
