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
16 / 256 pipelined (``bench_remote_baseline.py``).

The table is printed by ``bench_remote_report.py``. This module is imported only when
``phx bench remote`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from .bench_agents import NODE_LOOP_ENV
from .bench_cluster import ClusterBenchSizes, _casts, _latency, _throughput
from .bench_cluster_harness import Session, run_on_cluster
from .bench_local import LoopName, loop_factory, machine_info, save_json
from .bench_remote_baseline import IN_FLIGHT, run_baseline

__all__ = [
    "CAST_SENDERS",
    "IN_FLIGHT",
    "TRANSPORTS",
    "RemoteBenchSizes",
    "TransportName",
    "run_remote",
    "save_json",
]

TransportName = Literal["tcp", "http2", "quic"]

TRANSPORTS: tuple[TransportName, ...] = ("tcp", "http2", "quic")
"""What ``--transport all`` measures, in this order."""

CAST_SENDERS = 16
"""Concurrent senders of the pipelined casts row."""


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
    run = partial(run_on_cluster, factory, 1, node_env=node_env, node_loops=node_loops,
                  transports=transport)
    out: dict[str, Any] = {}
    say(f"{transport}: call latency, {sizes.latency_calls:,} sequential calls")
    out["call_latency"] = run(partial(_latency, sizes=sizes.cluster_sizes()))
    per_s: dict[str, float] = {}
    for n in IN_FLIGHT:
        say(f"{transport}: {sizes.calls_for(n):,} calls, {n} in flight")
        per_s[str(n)] = run(partial(_throughput, sizes=sizes.cluster_sizes(n), callers=n))
    out["calls_per_s"] = per_s

    async def casts(session: Session, senders: int = 1) -> tuple[float, int]:
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
        raw = runner.run(run_baseline(sizes, node_env))
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
