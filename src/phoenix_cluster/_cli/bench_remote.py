"""The remote-call benchmarks behind ``phx bench remote``, per transport, against a raw baseline.

For each transport asked for (``tcp``, ``http2``, ``quic``), every measurement starts a
fresh one-member :class:`~phoenix_cluster.testing.LocalCluster` (a real ``phx node``
process on loopback) whose node and client speak only that transport, and measures from a
``role="client"`` node in this process, with the machinery of ``phx bench cluster``
(:mod:`.bench_cluster`):

- remote call latency, one call in flight: 10,000 sequential calls to one agent after
  1,000 warm-up calls, each timed with ``time.perf_counter_ns`` (p50 / p95 / p99);
- calls per second with 1, 16 and 256 calls in flight: that many concurrent callers on
  the client, each calling its own agent; 10,000 calls with one in flight, 50,000 with
  16 and with 256;
- casts per second: ``await ref.touch.cast()`` to one agent at the default mailbox limit,
  each acknowledged by the node once queued, timed until every one was handled: 20,000
  from one sender (one round trip each), and 100,000 from 16 concurrent senders.

Sizes are divided by 10 with ``quick``.

The baseline, measured in the same invocation, is the raw limit those figures are judged
against: a bare asyncio request/response over one loopback TCP connection between this
process and a tiny echo server in a subprocess, with the same frames Phoenix sends (a
4-byte length and a msgpack :class:`~phoenix_cluster._wire.messages.Call` carrying the
same kind, key, method and arguments, answered by a :class:`~.messages.Reply` with the
msgpack result). Both ends use ``asyncio.Protocol`` directly: no handshake, no tasks per
message, no agents, no routing; a burst of calls leaves in one write. It runs on the same
event loops as the nodes and the client (uvloop when installed), one call in flight and
16 / 256 pipelined.

This module is imported only when ``phx bench remote`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, cast

from phoenix_cluster._agents.agent import kind_spec
from phoenix_cluster._wire.codec import WireCodec, decode_payload, encode_payload
from phoenix_cluster._wire.frames import FrameDecoder, pack_frames
from phoenix_cluster._wire.messages import Call, Reply

from .bench_agents import NODE_LOOP_ENV, BenchTarget
from .bench_cluster import (
    ClusterBenchSizes,
    _casts,
    _latency,
    _run,
    _Session,
    _summarize,
    _throughput,
    report_title,
)
from .bench_local import LoopName, loop_factory, machine_info, save_json

__all__ = [
    "CAST_SENDERS",
    "IN_FLIGHT",
    "TRANSPORTS",
    "RemoteBenchSizes",
    "TransportName",
    "print_report",
    "run_remote",
    "save_json",
]

TransportName = Literal["tcp", "http2", "quic"]

TRANSPORTS: tuple[TransportName, ...] = ("tcp", "http2", "quic")
"""What ``--transport all`` measures, in this order."""

IN_FLIGHT = (1, 16, 256)
"""Calls in flight for the throughput rows (concurrent callers)."""

CAST_SENDERS = 16
"""Concurrent senders of the pipelined casts row."""

# Issue 3: "reach" must be met between two processes on this 2-core
# machine; "aim" is the project's figure to reach.
REACH_CALL_P95_US = 1_000.0
AIM_CALL_P95_US = 300.0
REACH_PIPELINED_CALLS_PER_S = 10_000.0
AIM_PIPELINED_CALLS_PER_S = 30_000.0
AIM_CASTS_PER_S = 100_000.0

# What ``ref(BenchTarget, key).inc(1)`` puts on the wire, for the baseline.
_KIND = kind_spec(BenchTarget).name
_ARGS = encode_payload(((1,), {}))
_CALL_TIMEOUT_MS = 5_000
_BASELINE_TIMEOUT_S = 600.0  # the whole baseline; it takes seconds


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteBenchSizes:
    """How much work each measurement does."""

    latency_warmup: int = 1_000
    latency_calls: int = 10_000
    sequential_calls: int = 10_000  # the "1 in flight" throughput row
    pipelined_calls: int = 50_000  # each of the 16 and 256 in flight rows
    casts: int = 100_000  # from CAST_SENDERS senders
    sequential_casts: int = 20_000  # from one sender

    @classmethod
    def quick(cls) -> RemoteBenchSizes:
        """About a tenth of the full sizes (tests, smoke runs)."""
        return cls(latency_warmup=100, latency_calls=1_000, sequential_calls=1_000,
                   pipelined_calls=5_000, casts=10_000, sequential_casts=2_000)

    def calls_for(self, in_flight: int) -> int:
        return self.sequential_calls if in_flight == 1 else self.pipelined_calls

    def cluster_sizes(self, in_flight: int = 1) -> ClusterBenchSizes:
        """The same sizes in the form :mod:`.bench_cluster`'s measurements take."""
        return ClusterBenchSizes(
            latency_warmup=self.latency_warmup,
            latency_calls=self.latency_calls,
            throughput_calls=self.calls_for(in_flight),
            casts=self.casts,
            cast_agents=1,
        )


# --------------------------------------------------------------------------- Phoenix


def _measure_transport(
    transport: TransportName,
    sizes: RemoteBenchSizes,
    factory: Callable[[], asyncio.AbstractEventLoop],
    node_env: dict[str, str],
    node_loops: set[str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    run = partial(_run, factory, 1, node_env=node_env, node_loops=node_loops,
                  transports=transport)
    out: dict[str, Any] = {}
    say(f"{transport}: call latency, {sizes.latency_calls:,} sequential calls")
    out["call_latency"] = run(partial(_latency, sizes=sizes.cluster_sizes()))
    per_s: dict[str, float] = {}
    for n in IN_FLIGHT:
        say(f"{transport}: {sizes.calls_for(n):,} calls, {n} in flight")
        per_s[str(n)] = run(partial(_throughput, sizes=sizes.cluster_sizes(n), callers=n))
    out["calls_per_s"] = per_s

    async def casts(session: _Session, senders: int = 1) -> tuple[float, int]:
        n = sizes.sequential_casts if senders == 1 else sizes.casts
        return await _casts(session, dataclasses.replace(sizes.cluster_sizes(), casts=n),
                            agents=1, senders=senders)

    say(f"{transport}: {sizes.sequential_casts:,} casts to one agent from one sender")
    out["casts_per_s"], refused = run(casts)
    say(f"{transport}: {sizes.casts:,} casts to one agent from {CAST_SENDERS} senders")
    out[f"casts_per_s_{CAST_SENDERS}_senders"], refused_many = run(
        partial(casts, senders=CAST_SENDERS))
    out["cast_final_call_refusals"] = refused + refused_many
    return out


# --------------------------------------------------------------------------- baseline


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


async def _baseline(sizes: RemoteBenchSizes, node_env: dict[str, str]) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "from phoenix_cluster._cli.bench_remote import echo_server_main; echo_server_main()",
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
                return await _measure_baseline(client, sizes)
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


async def _measure_baseline(client: _EchoClient, sizes: RemoteBenchSizes) -> dict[str, Any]:
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
    out: dict[str, Any] = {"call_latency": _summarize(samples)}

    per_s: dict[str, float] = {}
    for n in IN_FLIGHT:
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


# --------------------------------------------------------------------------- driver


def _ratios(figures: dict[str, Any], raw: dict[str, Any]) -> dict[str, float]:
    """Phoenix as a fraction of the raw limit (1.0 = as fast as the bare baseline)."""
    lat, raw_lat = figures["call_latency"], raw["call_latency"]
    out = {f"{q}_latency": raw_lat[f"{q}_us"] / lat[f"{q}_us"] for q in ("p50", "p95", "p99")}
    for n, value in figures["calls_per_s"].items():
        out[f"calls_per_s_{n}"] = value / raw["calls_per_s"][n]
    return out


def run_remote(
    *,
    transports: tuple[TransportName, ...] = TRANSPORTS,
    quick: bool = False,
    loop: LoopName = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the baseline and every remote measurement; return JSON-ready data.

    Args:
        transports: which transports to measure, each on its own clusters.
        quick: shrink every size about tenfold.
        loop: the client's loop: ``auto`` (uvloop when importable), ``uvloop`` or
            ``asyncio``; with ``asyncio`` the nodes and the echo server run on asyncio too.
        progress: called with a short description before each measurement.
    """
    sizes = RemoteBenchSizes.quick() if quick else RemoteBenchSizes()
    loop_name, factory = loop_factory(loop)
    say = progress or (lambda _text: None)
    node_env = {NODE_LOOP_ENV: "asyncio" if loop == "asyncio" else "auto"}
    node_loops: set[str] = set()
    results: dict[str, Any] = {
        "machine": machine_info(loop_name, quick),
        "sizes": dataclasses.asdict(sizes),
    }

    say("raw asyncio baseline: Call/Reply frames to an echo server process")
    gc.collect()
    with asyncio.Runner(loop_factory=factory) as runner:
        raw = runner.run(_baseline(sizes, node_env))
    results["baseline"] = raw

    per_transport: dict[str, Any] = {}
    for transport in transports:
        per_transport[transport] = _measure_transport(
            transport, sizes, factory, node_env, node_loops, say)
    results["transports"] = per_transport
    results["of_baseline"] = {t: _ratios(f, raw) for t, f in per_transport.items()}

    results["machine"]["node_loop"] = ", ".join(sorted(node_loops))
    results["machine"]["nodes"] = "one phx node process on 127.0.0.1 per measurement"
    return results


# --------------------------------------------------------------------------- report


def _latency_verdict(p95: float) -> str:
    if p95 < AIM_CALL_P95_US:
        return "[green]aim[/]"
    if p95 < REACH_CALL_P95_US:
        return "[yellow]reach[/]"
    return "[red]missed[/]"


def _throughput_verdict(per_s: float) -> str:
    if per_s > AIM_PIPELINED_CALLS_PER_S:
        return "[green]aim[/]"
    if per_s > REACH_PIPELINED_CALLS_PER_S:
        return "[yellow]reach[/]"
    return "[red]missed[/]"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table (fits 80 columns)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    sizes = results["sizes"]
    raw = results["baseline"]
    table = Table(
        title=report_title("remote", m),
        caption=(
            "Client in this process, one phx node process on loopback (a fresh one per row). "
            f"call p50/p95/p99: {sizes['latency_calls']:,} sequential calls (one in flight); "
            f"n in flight: calls/s with n concurrent callers ({sizes['sequential_calls']:,} "
            f"calls with 1, {sizes['pipelined_calls']:,} with 16 or 256); casts: "
            f"await cast, acknowledged once queued, to one agent until all handled "
            f"({sizes['sequential_casts']:,} from 1 sender, {sizes['casts']:,} from "
            f"{CAST_SENDERS}). raw: bare asyncio "
            "Call/Reply frames over one loopback connection to an echo process; 'of raw': "
            "Phoenix's speed as a share of it (raw latency / Phoenix latency, Phoenix calls/s "
            "/ raw calls/s); met: the best goal met. Goals (issue 3): reach "
            "p95 < 1 ms and > 10,000 calls/s pipelined; aim p95 < 300 µs, > 30,000 calls/s, "
            "> 100,000 casts/s."
        ),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("measurement", no_wrap=True, max_width=20)
    table.add_column("figure", justify="right", no_wrap=True, min_width=9)
    table.add_column("raw", justify="right", no_wrap=True, min_width=9)
    table.add_column("of raw", justify="right", no_wrap=True, min_width=6)
    table.add_column("reach / aim", justify="right", no_wrap=True)
    table.add_column("met", no_wrap=True)

    raw_lat = raw["call_latency"]
    for transport, figures in results["transports"].items():
        share = results["of_baseline"][transport]
        lat = figures["call_latency"]
        for q in ("p50", "p95", "p99"):
            is_p95 = q == "p95"
            table.add_row(
                f"{transport} call {q}",
                f"{lat[f'{q}_us']:,.0f} µs",
                f"{raw_lat[f'{q}_us']:,.0f} µs",
                _percent(share[f"{q}_latency"]),
                "1 ms / 300 µs" if is_p95 else "",
                _latency_verdict(lat["p95_us"]) if is_p95 else "",
            )
        for n, value in figures["calls_per_s"].items():
            pipelined = int(n) > 1
            table.add_row(
                f"{transport} {n} in flight",
                f"{value:,.0f}/s",
                f"{raw['calls_per_s'][n]:,.0f}/s",
                _percent(share[f"calls_per_s_{n}"]),
                "10k / 30k" if pipelined else "",
                _throughput_verdict(value) if pipelined else "",
            )
        table.add_row(f"{transport} casts, 1 sender", f"{figures['casts_per_s']:,.0f}/s",
                      "", "", "", "")
        casts = figures[f"casts_per_s_{CAST_SENDERS}_senders"]
        table.add_row(
            f"{transport} casts, {CAST_SENDERS} senders",
            f"{casts:,.0f}/s",
            "",
            "",
            "— / 100k",
            "[green]aim[/]" if casts > AIM_CASTS_PER_S else "[red]missed[/]",
            end_section=True,
        )
    Console().print(table)
