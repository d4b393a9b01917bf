"""The cross-node benchmarks behind ``phx bench cluster``.

Every measurement starts a fresh :class:`~phoenix_cluster.testing.LocalCluster`: real
``phx node`` processes on loopback that import :mod:`.bench_agents`, talking over
authenticated TCP. The bench process joins as a ``role="client"`` node built from default
:class:`~phoenix_cluster.Settings` (plus the cluster's seeds and secret; no
``phoenix.toml``, no ``PHX_*`` variables) and measures from there, so every client call
crosses a process boundary and a socket, like a call from one machine to another.

What is measured, and how (sizes are divided by 10 with ``quick``):

- cross-node call latency: one caller on the client, one agent on the only member;
  10,000 sequential calls after 1,000 warm-up calls, each timed with
  ``time.perf_counter_ns``; the "sync" calls/s is their count over their summed time;
- member-to-member call latency: the same, measured inside one member of a 3-member
  cluster (a :class:`~.bench_agents.BenchRelay` handler) against an agent on another
  member, then returned to the client;
- pipelined call throughput: 100 and 1,000 concurrent callers on the client, each
  calling its own agent (distinct keys), 50,000 calls in all, over a 1-member and over a
  3-member cluster (keys spread by the hash ring);
- cast throughput: 100,000 ``await ref.touch.cast()`` (each acknowledged by the node once
  queued) to one agent, and to 1,000 agents round-robin, on one member, timed until every
  cast has been handled: calls that read the agents' counters
  end the run (a connection keeps each sender's order, so they run after the casts). A
  node whose inbound slots are all taken by casts refuses such a call with
  ``Overloaded``; it is retried after 1 ms and counted in ``cast_final_call_refusals``.

The event loop of the client is the one ``--loop`` picks; the nodes report theirs (a
``phx node`` uses uvloop when it can import it; ``--loop asyncio`` keeps them off it, see
:mod:`.bench_agents`).

Each measurement's fresh cluster and client come from ``bench_cluster_harness.py``; the
table is printed by ``bench_cluster_report.py``. This module is imported only when
``phx bench cluster`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .._agents.ref import AgentRef
from ..errors import Overloaded
from .bench_agents import NODE_LOOP_ENV, BenchRelay, BenchTarget
from .bench_cluster_harness import Session, run_on_cluster, summarize, where
from .bench_cluster_report import print_report
from .bench_local import LoopName, loop_factory, machine_info, save_json

__all__ = ["ClusterBenchSizes", "print_report", "run_cluster", "save_json"]

CONCURRENCY = (100, 1_000)
MEMBERS = (1, 3)

_LONG_CALL_S = 600.0  # a relay's measuring call runs for seconds


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterBenchSizes:
    """How much work each measurement does."""

    latency_warmup: int = 1_000
    latency_calls: int = 10_000
    throughput_calls: int = 50_000
    casts: int = 100_000
    cast_agents: int = 1_000

    @classmethod
    def quick(cls) -> ClusterBenchSizes:
        """About a tenth of the full sizes (tests, smoke runs)."""
        return cls(
            latency_warmup=100,
            latency_calls=1_000,
            throughput_calls=5_000,
            casts=10_000,
            cast_agents=100,
        )


# --------------------------------------------------------------------------- measurements


async def _latency(session: Session, sizes: ClusterBenchSizes) -> dict[str, float]:
    """Client → member: sequential calls to one agent."""
    ref = session.client.ref(BenchTarget, "latency")
    inc = ref.inc
    for _ in range(sizes.latency_warmup):
        await inc(1)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    gc.collect()
    for _ in range(sizes.latency_calls):
        started = clock()
        await inc(1)
        append(clock() - started)
    return summarize(samples)


async def _member_latency(session: Session, sizes: ClusterBenchSizes) -> dict[str, float]:
    """Member → member: a relay on one member calls an agent on another, timing there."""
    client = session.client
    relay = client.ref(BenchRelay, "relay")
    relay_node = await where(session, relay)
    for i in range(1_000):
        target = client.ref(BenchTarget, f"target-{i}")
        if await where(session, target) != relay_node:
            break
    else:  # pragma: no cover - the ring would have to put 1,000 keys on one member
        raise RuntimeError("found no key owned by another member than the relay's")
    samples: list[int] = await relay.options(timeout=_LONG_CALL_S).measure(
        target.key, sizes.latency_warmup, sizes.latency_calls
    )
    if len(samples) != sizes.latency_calls:  # pragma: no cover - would be a bench bug
        raise RuntimeError(f"the relay returned {len(samples)} samples")
    return summarize(samples)


async def _throughput(session: Session, sizes: ClusterBenchSizes, callers: int) -> float:
    """``callers`` concurrent callers, each on its own agent, calls as fast as answered."""
    client = session.client
    refs = [client.ref(BenchTarget, f"t{i}") for i in range(callers)]
    # Activate every agent (and open every connection) before the clock starts.
    await asyncio.gather(*(r.inc(0) for r in refs))
    per_caller = max(1, sizes.throughput_calls // callers)

    async def caller(ref: AgentRef) -> None:
        inc = ref.inc
        for _ in range(per_caller):
            await inc(1)

    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(caller(r) for r in refs))
    elapsed = time.perf_counter() - started
    return callers * per_caller / elapsed


async def _casts(session: Session, sizes: ClusterBenchSizes, agents: int,
                 senders: int = 1) -> tuple[float, int]:
    """``await ref.touch.cast()`` round-robin over ``agents`` agents from ``senders``
    concurrent tasks, timed until every one was handled. Each cast returns once the
    node acknowledged it is in the agent's mailbox (default ``mailbox_limit``).

    Returns:
        Casts per second, and how many times the final reading calls were refused
        with ``Overloaded`` (and retried).
    """
    client = session.client
    refs = [client.ref(BenchTarget, f"c{i}") for i in range(agents)]
    await asyncio.gather(*(r.inc(0) for r in refs))
    touches = [r.touch for r in refs]
    per_agent = max(1, sizes.casts // agents // senders) * senders
    total = per_agent * agents
    refusals = 0

    async def sender() -> None:
        for _ in range(per_agent // senders):
            for touch in touches:
                await touch.cast()

    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    # The counters are read by calls sent behind the casts on the same connection, so
    # they see every cast at once, unless the node refused them (``Overloaded``: its
    # inbound slots were all taken by casts still being handed to the agents).
    while True:
        try:
            counts: list[int] = await asyncio.gather(*(r.get() for r in refs))
        except Overloaded:
            refusals += 1
            await asyncio.sleep(0.001)
            continue
        if sum(counts) >= total:
            break
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    if sum(counts) != total:  # pragma: no cover - would be a runtime bug
        raise RuntimeError(f"sent {total} casts, the agents counted {sum(counts)}")
    return total / elapsed, refusals


# --------------------------------------------------------------------------- driver


def run_cluster(
    *,
    quick: bool = False,
    loop: LoopName = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every cross-node measurement and return the results as JSON-ready data.

    Args:
        quick: shrink every size about tenfold.
        loop: the client's loop: ``auto`` (uvloop when importable), ``uvloop`` or
            ``asyncio``; with ``asyncio`` the nodes run on asyncio too.
        progress: called with a short description before each measurement.
    """
    sizes = ClusterBenchSizes.quick() if quick else ClusterBenchSizes()
    loop_name, factory = loop_factory(loop)
    say = progress or (lambda _text: None)
    node_env = {NODE_LOOP_ENV: "asyncio"} if loop == "asyncio" else {NODE_LOOP_ENV: "auto"}
    node_loops: set[str] = set()
    run = partial(run_on_cluster, factory, node_env=node_env, node_loops=node_loops)
    results: dict[str, Any] = {
        "machine": machine_info(loop_name, quick),
        "sizes": dataclasses.asdict(sizes),
    }

    say(f"cross-node call latency: {sizes.latency_calls:,} sequential calls, client → member")
    results["call_latency"] = run(1, partial(_latency, sizes=sizes))
    say(f"member → member call latency: {sizes.latency_calls:,} sequential calls")
    results["member_call_latency"] = run(3, partial(_member_latency, sizes=sizes))

    throughput: dict[str, dict[str, float]] = {}
    for members in MEMBERS:
        where = f"{members}_member{'s' if members > 1 else ''}"
        throughput[where] = {}
        for callers in CONCURRENCY:
            say(f"pipelined calls: {callers:,} callers, {members} member(s)")
            throughput[where][str(callers)] = run(
                members, partial(_throughput, sizes=sizes, callers=callers)
            )
    results["call_throughput_per_s"] = throughput

    casts: dict[str, float] = {}
    refused: dict[str, int] = {}
    for agents in (1, sizes.cast_agents):
        say(f"remote casts: {sizes.casts:,} casts to {agents:,} agent(s) on 1 member")
        name = f"{agents}_agents" if agents > 1 else "1_agent"
        casts[name], refused[name] = run(1, partial(_casts, sizes=sizes, agents=agents))
    results["cast_throughput_per_s"] = casts
    # Not a figure: how often the calls that end a cast run found the node's inbound
    # slots full and were refused (Overloaded, retried after 1 ms).
    results["cast_final_call_refusals"] = refused

    results["machine"]["node_loop"] = ", ".join(sorted(node_loops))
    results["machine"]["nodes"] = "phx node processes on 127.0.0.1 (LocalCluster)"
    return results
