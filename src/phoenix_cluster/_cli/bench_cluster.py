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

This module is imported only when ``phx bench cluster`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster

from .bench_agents import NODE_LOOP_ENV, BenchRelay, BenchTarget
from .bench_local import LoopName, loop_factory, machine_info, save_json

__all__ = ["ClusterBenchSizes", "print_report", "run_cluster", "save_json"]

# The project's goals, shown next to the measured figures.
GOAL_CALL_P95_US = 300.0
SPEC_CALL_P95_US = 10_000.0
GOAL_PIPELINED_CALLS_PER_S = 30_000.0
GOAL_CASTS_PER_S = 100_000.0
# Ray 2.60 on this project's 2-core machines, one driver and one actor.
RAY_CALL_P50_US = 660.0
RAY_CALL_P95_US = 890.0
RAY_SEQUENTIAL_CALLS_PER_S = 1_400.0
RAY_PIPELINED_CALLS_PER_S = 3_500.0

CONCURRENCY = (100, 1_000)
MEMBERS = (1, 3)

_IMPORTS = ("phoenix_cluster._cli.bench_agents",)
TRANSPORTS_ENV = "PHX_TRANSPORTS"
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


# --------------------------------------------------------------------------- helpers


class _Session:
    """What a measurement gets: the cluster, a client node, and the nodes' loops."""

    def __init__(self, cluster: LocalCluster, client: phx.Node) -> None:
        self.cluster = cluster
        self.client = client
        self.node_loops: set[str] = set()


Measure = Callable[[_Session], Awaitable[Any]]


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """Set (``None``: leave alone) one variable of this process's environment for a while."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _run(
    factory: Callable[[], asyncio.AbstractEventLoop],
    members: int,
    measure: Measure,
    node_env: dict[str, str],
    node_loops: set[str],
    *,
    transports: str | None = None,
) -> Any:
    """Run ``measure`` in a fresh loop against a fresh cluster of ``members`` nodes.

    Args:
        transports: a transport chain (``"tcp"``, ``"http2"``, ``"quic"``, ...) for the
            nodes, the client and the cluster's own probe (set as ``PHX_TRANSPORTS`` in
            this process while the cluster runs); ``None`` keeps the defaults.
    """

    async def main() -> Any:
        async with LocalCluster(nodes=members, imports=_IMPORTS, env=node_env) as cluster:
            settings = phx.Settings(
                name=f"bench-client-{secrets.token_hex(3)}",
                role="client",
                seeds=cluster.addresses,
                cookie=cluster.cookie,
                transports=transports or "tcp",
            )
            async with phx.Node(settings=settings) as client:
                session = _Session(cluster, client)
                await _probe_members(session, members)
                result = await measure(session)
                node_loops.update(session.node_loops)
                return result

    gc.collect()
    with _environ(TRANSPORTS_ENV, transports), asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1_000.0


def _summarize(samples: list[int]) -> dict[str, float]:
    samples.sort()
    total_ns = sum(samples)
    return {
        "calls": float(len(samples)),
        "p50_us": _percentile(samples, 0.50),
        "p95_us": _percentile(samples, 0.95),
        "p99_us": _percentile(samples, 0.99),
        "mean_us": total_ns / len(samples) / 1_000.0,
        "max_us": samples[-1] / 1_000.0,
        "calls_per_s": len(samples) / (total_ns / 1e9),
    }


async def _where(session: _Session, ref: phx.AgentRef) -> str:
    """The node hosting ``ref``; records the event loop that node runs."""
    info: dict[str, str] = await ref.where()
    session.node_loops.add(info["loop"])
    return info["node"]


async def _probe_members(session: _Session, members: int) -> None:
    """Reach every member once (recording the loop each runs) before measuring."""
    seen: set[str] = set()
    for i in range(10_000):
        seen.add(await _where(session, session.client.ref(BenchTarget, f"probe-{i}")))
        if len(seen) == members:
            return
    raise RuntimeError(f"reached {len(seen)} of {members} members")  # pragma: no cover


# --------------------------------------------------------------------------- measurements


async def _latency(session: _Session, sizes: ClusterBenchSizes) -> dict[str, float]:
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
    return _summarize(samples)


async def _member_latency(session: _Session, sizes: ClusterBenchSizes) -> dict[str, float]:
    """Member → member: a relay on one member calls an agent on another, timing there."""
    client = session.client
    relay = client.ref(BenchRelay, "relay")
    relay_node = await _where(session, relay)
    for i in range(1_000):
        target = client.ref(BenchTarget, f"target-{i}")
        if await _where(session, target) != relay_node:
            break
    else:  # pragma: no cover - the ring would have to put 1,000 keys on one member
        raise RuntimeError("found no key owned by another member than the relay's")
    samples: list[int] = await relay.options(timeout=_LONG_CALL_S).measure(
        target.key, sizes.latency_warmup, sizes.latency_calls
    )
    if len(samples) != sizes.latency_calls:  # pragma: no cover - would be a bench bug
        raise RuntimeError(f"the relay returned {len(samples)} samples")
    return _summarize(samples)


async def _throughput(session: _Session, sizes: ClusterBenchSizes, callers: int) -> float:
    """``callers`` concurrent callers, each on its own agent, calls as fast as answered."""
    client = session.client
    refs = [client.ref(BenchTarget, f"t{i}") for i in range(callers)]
    # Activate every agent (and open every connection) before the clock starts.
    await asyncio.gather(*(r.inc(0) for r in refs))
    per_caller = max(1, sizes.throughput_calls // callers)

    async def caller(ref: phx.AgentRef) -> None:
        inc = ref.inc
        for _ in range(per_caller):
            await inc(1)

    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(caller(r) for r in refs))
    elapsed = time.perf_counter() - started
    return callers * per_caller / elapsed


async def _casts(session: _Session, sizes: ClusterBenchSizes, agents: int,
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
        except phx.Overloaded:
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
    run = partial(_run, factory, node_env=node_env, node_loops=node_loops)
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


def _verdict(value: float, goal: float, spec: float | None = None, *, lower: bool) -> str:
    def met(bound: float) -> bool:
        return value < bound if lower else value > bound

    if met(goal):
        return "[green]goal met[/]"
    if spec is not None and met(spec):
        return "[yellow]spec met[/]"
    return "[red]missed[/]"


def _ray(ray: str, value: float, ray_value: float, *, lower: bool) -> str:
    """Ray's figure, and how many times better (or worse) ours is."""
    ratio = ray_value / value if lower else value / ray_value
    return f"{ray} ({ratio:.1f}x)" if ratio >= 1 else f"{ray} (1/{1 / ratio:.1f})"


def report_title(command: str, m: dict[str, Any]) -> str:
    """``phx bench COMMAND: 2 CPUs, CPython 3.11.7, uvloop`` (the loops of client and nodes)."""
    loops = (
        m["loop"] if m["loop"] == m["node_loop"] else f"client {m['loop']}, nodes {m['node_loop']}"
    )
    return (f"phx bench {command}: {m['cpu_count']} CPUs, {m['implementation']} "
            f"{m['python']}, {loops}{' (quick)' if m['quick'] else ''}")


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table (fits 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    sizes = results["sizes"]
    table = Table(
        title=report_title("cluster", m),
        caption=(
            "Node processes on loopback, a fresh cluster per row; casts on 1 member. "
            f"{sizes['latency_calls']:,} sequential calls per latency row, "
            f"{sizes['throughput_calls']:,} per callers row, {sizes['casts']:,} casts per "
            "cast row. Ray 2.60 (driver → actor, same kind of machine), and in brackets how many "
            "times better Phoenix is."
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("verdict")
    table.add_column("Ray", justify="right")

    for key, label in (
        ("call_latency", "client → member"),
        ("member_call_latency", "member → member"),
    ):
        lat = results[key]
        p50, p95, per_s = lat["p50_us"], lat["p95_us"], lat["calls_per_s"]
        ray_p50 = _ray(f"{RAY_CALL_P50_US:.0f} µs", p50, RAY_CALL_P50_US, lower=True)
        table.add_row(f"{label} p50", f"{p50:.0f} µs", "", "", ray_p50)
        table.add_row(
            f"{label} p95",
            f"{p95:.0f} µs",
            f"< {GOAL_CALL_P95_US:.0f} µs",
            _verdict(p95, GOAL_CALL_P95_US, SPEC_CALL_P95_US, lower=True),
            _ray(f"{RAY_CALL_P95_US:.0f} µs", p95, RAY_CALL_P95_US, lower=True),
        )
        table.add_row(f"{label} p99", f"{lat['p99_us']:.0f} µs")
        ray_seq = f"{RAY_SEQUENTIAL_CALLS_PER_S:,.0f}/s"
        table.add_row(
            f"{label} sync",
            f"{per_s:,.0f}/s",
            "",
            "",
            _ray(ray_seq, per_s, RAY_SEQUENTIAL_CALLS_PER_S, lower=False),
        )
    for where, per_callers in results["call_throughput_per_s"].items():
        members = where.replace("_", " ")
        for callers, value in per_callers.items():
            table.add_row(
                f"{int(callers):,} callers, {members}",
                f"{value:,.0f}/s",
                f"> {GOAL_PIPELINED_CALLS_PER_S:,.0f}",
                _verdict(value, GOAL_PIPELINED_CALLS_PER_S, lower=False),
                _ray(
                    f"{RAY_PIPELINED_CALLS_PER_S:,.0f}/s",
                    value,
                    RAY_PIPELINED_CALLS_PER_S,
                    lower=False,
                ),
            )
    for name, value in results["cast_throughput_per_s"].items():
        n = name.split("_")[0]
        table.add_row(
            f"casts, {int(n):,} agent{'s' if int(n) > 1 else ''}",
            f"{value:,.0f}/s",
            f"> {GOAL_CASTS_PER_S:,.0f}",
            _verdict(value, GOAL_CASTS_PER_S, lower=False),
            "",
        )
    Console().print(table)
