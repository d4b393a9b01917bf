"""Micro-benchmark of the TCP transport: two transports in one process over loopback.

Measures, for each event loop (asyncio, and uvloop when installed):

- sequential request/reply latency (one call in flight): p50 / p95 / p99;
- pipelined request/reply throughput with ``--window`` calls in flight;
- cast throughput (fire-and-forget, counted when the receiver's handler ran).

Both ends share one process and one event loop, so this measures the transport's own
cost (framing, codec, queues, task hops, syscalls), not cross-process scheduling; the
two-process figures come from ``phx bench remote``.

    .venv/bin/python benchmarks/transport_roundtrip.py [--seq 5000] [--calls 100000]
        [--window 256] [--casts 200000] [--payload 32] [--loop both|asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import PeerConnection
from phoenix_cluster._transport.tcp import TcpTransport
from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply

SECRET = b"benchmark-secret"


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> dict[str, float]:
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

    def make(name: str) -> TcpTransport:
        return TcpTransport(name, 1, SECRET, env=Env(), bus=TelemetryBus(),
                            max_frame_bytes=16 * 1024 * 1024, handler=handler,
                            send_queue_frames=max(10_000, args.window * 2))

    client, server = make("bench-client"), make("bench-server")
    try:
        conn = await client.connect(await server.start("127.0.0.1:0"))
        payload = b"x" * args.payload
        ids = itertools.count(1)

        def call() -> Call:
            return Call(request_id=next(ids), kind="bench", key="k", method="echo",
                        payload=payload, timeout_ms=10_000)

        for _ in range(1_000):  # warm-up: codec paths, allocator, socket buffers
            await conn.request(call(), 10.0)

        latencies: list[float] = []
        for _ in range(args.seq):
            t0 = time.perf_counter()
            await conn.request(call(), 10.0)
            latencies.append(time.perf_counter() - t0)
        latencies.sort()

        remaining = args.calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await conn.request(call(), 30.0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.window)))
        pipelined = args.calls / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for i in range(args.casts):
            await conn.send(Cast(request_id=i, kind="bench", key="k", method="note",
                                 payload=payload))
        await casts_done.wait()
        casts = args.casts / (time.perf_counter() - t0)
        stats = conn.statistics()
        return {
            "p50_us": percentile(latencies, 0.50) * 1e6,
            "p95_us": percentile(latencies, 0.95) * 1e6,
            "p99_us": percentile(latencies, 0.99) * 1e6,
            "mean_us": statistics.fmean(latencies) * 1e6,
            "seq_calls_per_s": 1 / statistics.fmean(latencies),
            "pipelined_calls_per_s": pipelined,
            "casts_per_s": casts,
            "frames_per_write": stats.frames_sent / max(1, stats.writes),
        }
    finally:
        await client.aclose()
        await server.aclose()


def loops(choice: str) -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    out: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = []
    if choice in ("both", "asyncio"):
        out.append(("asyncio", asyncio.new_event_loop))
    if choice in ("both", "uvloop"):
        try:
            import uvloop
        except ImportError:
            print("uvloop not installed; skipping it")
        else:
            out.append(("uvloop", uvloop.new_event_loop))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=5_000, help="sequential calls timed")
    parser.add_argument("--calls", type=int, default=100_000, help="pipelined calls")
    parser.add_argument("--window", type=int, default=256, help="calls in flight when pipelined")
    parser.add_argument("--casts", type=int, default=200_000, help="casts sent")
    parser.add_argument("--payload", type=int, default=32, help="payload bytes per message")
    parser.add_argument("--loop", choices=("both", "asyncio", "uvloop"), default="both")
    args = parser.parse_args()
    print(f"one process, loopback TCP, {args.payload} B payloads, window {args.window}")
    header = f"{'loop':8} {'p50 µs':>8} {'p95 µs':>8} {'p99 µs':>8} {'seq/s':>9}" \
             f" {'pipelined/s':>12} {'casts/s':>10} {'frames/write':>13}"
    print(header)
    for name, factory in loops(args.loop):
        coro: Coroutine[Any, Any, dict[str, float]] = run(args)
        with asyncio.Runner(loop_factory=factory) as runner:
            r = runner.run(coro)
        print(f"{name:8} {r['p50_us']:8.0f} {r['p95_us']:8.0f} {r['p99_us']:8.0f}"
              f" {r['seq_calls_per_s']:9,.0f} {r['pipelined_calls_per_s']:12,.0f}"
              f" {r['casts_per_s']:10,.0f} {r['frames_per_write']:13.1f}")


if __name__ == "__main__":
    main()
