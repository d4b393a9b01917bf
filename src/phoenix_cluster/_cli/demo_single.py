"""``phx demo --single``: a scripted single-node workload with a live view.

Thousands of agents of two kinds (``demo_agents.py``: bank accounts and counters) serve
calls and casts from many concurrent clients. Some calls fail on purpose after changing
state; the runtime rolls them back, and the end-of-run checks prove it: the money in all
accounts still adds up, and the counters hold exactly the increments that were accepted.

On a terminal the figures refresh in place about four times a second; otherwise (CI,
tests, a pipe) a plain line is printed every second. The exit status is 0 only if every
invariant holds.

The run's figures are kept by ``demo_single_stats.py`` and shown by
``demo_single_view.py``; this module runs the workload and checks the invariants. The
heavy imports (rich, the agents) happen when the command runs, so ``phx --help`` stays
fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .demo_single_stats import LatencyHistogram, Outcome, SingleDemoConfig, SingleDemoStats
from .demo_single_view import render, show, summary

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .._node import Node

__all__ = ["LatencyHistogram", "run_single"]

_OVERDRAFT = 10**12  # more than all the money in any run: such a transfer is refused


def run_single(
    *, duration: float, agents: int, clients: int, rate: int, forever: bool, seed: int | None
) -> bool:
    """Run the single-node demo; ``True`` if every invariant held."""
    from .bench_local import loop_factory

    _, factory = loop_factory("auto")
    config = SingleDemoConfig(
        duration_s=None if forever else duration,
        accounts=agents // 2,
        counters=agents - agents // 2,
        clients=clients,
        rate=rate,
        seed=seed if seed is not None else random.SystemRandom().randrange(1 << 32),
        live=sys.stdout.isatty(),
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_main(config))


# --------------------------------------------------------------------------- the workload


async def _client(
    node: Node,
    config: SingleDemoConfig,
    stats: SingleDemoStats,
    index: int,
    stop: asyncio.Event,
) -> None:
    from ..errors import AgentError, CallTimeout, Overloaded
    from .demo_agents import Account, Counter

    rng = random.Random(config.seed * 1_000_003 + index)
    accounts, counters = config.accounts, config.counters
    clock = time.perf_counter_ns
    # Pacing: each client offers rate/clients operations a second on a fixed schedule
    # (falling behind is not made up in a burst), so latency shows the runtime rather
    # than a queue of our own making. Without a rate the clients run flat out.
    interval = config.clients / config.rate if config.rate else 0.0
    next_at = time.monotonic() + rng.random() * interval
    while not stop.is_set():
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.monotonic() - interval)
        roll = rng.random()
        if roll < 0.25:
            # A cast: fire-and-forget. Hot counters (low keys) stay active; the cold
            # tail passivates after three idle seconds and comes back when touched.
            key = f"counter-{int(counters * rng.random() ** 3)}"
            try:
                await node.ref(Counter, key).increment.cast(1)
            except Overloaded:
                stats.overloaded += 1
            else:
                stats.casts += 1
                stats.increments_accepted += 1
            if not interval and rng.random() < 0.5:
                await asyncio.sleep(0)  # casts do not yield; let the others run
            continue
        src = rng.randrange(accounts)
        account = node.ref(Account, f"account-{src}")
        started = clock()
        try:
            if roll < 0.35:
                await account.get_balance()
            else:
                dst = (src + 1 + rng.randrange(accounts - 1)) % accounts
                if roll < 0.38:
                    amount, fail = _OVERDRAFT, False
                else:
                    amount, fail = rng.randint(1, 100), roll < 0.42
                stats.transfers += 1
                await account.transfer(f"account-{dst}", amount, fail)
        except AgentError as exc:
            if exc.remote_type.endswith("InjectedFailure"):
                stats.injected_rolled_back += 1
            elif exc.remote_type.endswith("InsufficientFunds"):
                stats.overdrafts_refused += 1
            else:
                stats.other_errors += 1
        except Overloaded:
            stats.overloaded += 1
        except CallTimeout:
            stats.timeouts += 1
        stats.calls += 1
        stats.tick_samples.append(clock() - started)


async def _quiesce(node: Node, timeout_s: float = 30.0) -> None:
    """Wait until no agent has a message waiting (casts sent by handlers included)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = node.statistics().agents
        if stats.queued_messages == 0 and stats.busy_agents == 0:
            return
        await asyncio.sleep(0.01)


async def _sum_all(refs: list[Any], method: str) -> int:
    total = 0
    for first in range(0, len(refs), 1_000):
        batch = refs[first : first + 1_000]
        total += sum(await asyncio.gather(*(getattr(r, method)() for r in batch)))
    return total


async def _check(node: Node, config: SingleDemoConfig, stats: SingleDemoStats) -> Outcome:
    from .demo_agents import INITIAL_BALANCE, Account, Counter

    await _quiesce(node)
    money = await _sum_all(
        [node.ref(Account, f"account-{i}") for i in range(config.accounts)], "get_balance"
    )
    counted = await _sum_all(
        [node.ref(Counter, f"counter-{i}") for i in range(config.counters)], "get"
    )
    return Outcome(config.accounts * INITIAL_BALANCE, money, stats.increments_accepted, counted)


# --------------------------------------------------------------------------- driver


async def _main(config: SingleDemoConfig) -> bool:
    from .._foundation.settings import Settings
    from .._node import Node

    stats = SingleDemoStats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Ctrl-C ends the workload gracefully (the checks still run); a second one,
        # after the handler is removed below, interrupts for real.
        loop.add_signal_handler(signal.SIGINT, stop.set)

    async with Node(settings=Settings(name="demo")) as node:
        started = time.perf_counter()
        click.echo(
            f"phx demo: {config.accounts:,} accounts and {config.counters:,} counters on "
            f"node {node.name}, {config.clients:,} clients"
            + ("" if config.duration_s is None else f", {config.duration_s:g} s")
        )
        clients = [
            loop.create_task(_client(node, config, stats, i, stop)) for i in range(config.clients)
        ]
        live_cm: Any = contextlib.nullcontext()
        update: Callable[[RenderableType], None] | None = None
        if config.live:
            from rich.live import Live

            live = Live(render(node, config, stats, 0.0), auto_refresh=False)
            live_cm = live

            def update(renderable: RenderableType) -> None:
                live.update(renderable, refresh=True)

        with live_cm:
            viewer = loop.create_task(show(node, config, stats, started, update))
            try:
                if config.duration_s is None:
                    await stop.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), config.duration_s)
            finally:
                stop.set()
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGINT)
                await asyncio.gather(*clients, return_exceptions=True)
                viewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await viewer
        elapsed = time.perf_counter() - started
        stats.tick(time.perf_counter())
        click.echo("workload stopped; checking invariants…")
        outcome = await _check(node, config, stats)
        for line in summary(node, config, stats, elapsed, outcome):
            click.echo(line)
    return outcome.money_ok and outcome.counters_ok
