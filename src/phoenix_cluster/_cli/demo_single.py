"""``phx demo --single``: a scripted single-node workload with a live view.

Thousands of agents of two kinds (``demo_agents.py``: bank accounts and counters) serve
calls and casts from many concurrent clients. Some calls fail on purpose after changing
state; the runtime rolls them back, and the end-of-run checks prove it: the money in all
accounts still adds up, and the counters hold exactly the increments that were accepted.

On a terminal the figures refresh in place about four times a second; otherwise (CI,
tests, a pipe) a plain line is printed every second. The exit status is 0 only if every
invariant holds.

The heavy imports (rich, the agents) happen when the command runs, so ``phx --help``
stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import signal
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import RenderableType

    import phoenix_cluster as phx

__all__ = ["LatencyHistogram", "run_single"]

_REFRESH_S = 0.25
_PLAIN_EVERY = 4  # ticks between plain lines (one a second)
_WINDOW_TICKS = 4  # rates and latencies are over the last second
_OVERDRAFT = 10**12  # more than all the money in any run: such a transfer is refused


def run_single(
    *, duration: float, agents: int, clients: int, rate: int, forever: bool, seed: int | None
) -> bool:
    """Run the single-node demo; ``True`` if every invariant held."""
    from .bench_local import loop_factory

    _, factory = loop_factory("auto")
    config = _Config(
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


@dataclass(frozen=True, slots=True)
class _Config:
    duration_s: float | None
    accounts: int
    counters: int
    clients: int
    rate: int
    seed: int
    live: bool


class LatencyHistogram:
    """Latencies in log buckets (about 5 % wide): percentiles of a long run in fixed memory."""

    __slots__ = ("buckets", "count")
    _SCALE = 20.0

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0

    def add_all(self, samples_ns: Iterable[int]) -> None:
        buckets = self.buckets
        scale = self._SCALE
        for ns in samples_ns:
            b = int(math.log(ns if ns > 1 else 1) * scale)
            buckets[b] = buckets.get(b, 0) + 1
            self.count += 1

    def percentile_us(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return math.exp((b + 0.5) / self._SCALE) / 1_000.0
        return 0.0  # pragma: no cover - unreachable


class _Stats:
    """What the clients did, and the recent window the live view shows."""

    def __init__(self) -> None:
        self.calls = 0
        self.casts = 0
        self.transfers = 0
        self.injected_rolled_back = 0
        self.overdrafts_refused = 0
        self.other_errors = 0
        self.overloaded = 0
        self.timeouts = 0
        self.increments_accepted = 0
        self.tick_samples: array[int] = array("q")
        self.window: deque[array[int]] = deque(maxlen=_WINDOW_TICKS)
        self.rates: deque[tuple[float, int, int]] = deque(maxlen=_WINDOW_TICKS + 1)
        self.whole_run = LatencyHistogram()

    @property
    def rolled_back(self) -> int:
        return self.injected_rolled_back + self.overdrafts_refused + self.other_errors

    def tick(self, now: float) -> None:
        samples = self.tick_samples
        self.tick_samples = array("q")
        self.window.append(samples)
        self.whole_run.add_all(samples)
        self.rates.append((now, self.calls, self.casts))

    def rate(self) -> tuple[float, float]:
        """Calls/s and casts/s over the window."""
        if len(self.rates) < 2:
            return 0.0, 0.0
        (t0, calls0, casts0), (t1, calls1, casts1) = self.rates[0], self.rates[-1]
        dt = max(t1 - t0, 1e-9)
        return (calls1 - calls0) / dt, (casts1 - casts0) / dt

    def window_percentiles_us(self) -> tuple[float, float]:
        samples = sorted(itertools.chain.from_iterable(self.window))
        if not samples:
            return 0.0, 0.0
        n = len(samples)
        return samples[n // 2] / 1_000.0, samples[min(n - 1, int(n * 0.95))] / 1_000.0


# --------------------------------------------------------------------------- the workload


async def _client(
    node: phx.Node, config: _Config, stats: _Stats, index: int, stop: asyncio.Event
) -> None:
    import phoenix_cluster as phx

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
            except phx.Overloaded:
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
        except phx.AgentError as exc:
            if exc.remote_type.endswith("InjectedFailure"):
                stats.injected_rolled_back += 1
            elif exc.remote_type.endswith("InsufficientFunds"):
                stats.overdrafts_refused += 1
            else:
                stats.other_errors += 1
        except phx.Overloaded:
            stats.overloaded += 1
        except phx.CallTimeout:
            stats.timeouts += 1
        stats.calls += 1
        stats.tick_samples.append(clock() - started)


async def _quiesce(node: phx.Node, timeout_s: float = 30.0) -> None:
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


@dataclass(frozen=True, slots=True)
class _Outcome:
    money_expected: int
    money_found: int
    increments_accepted: int
    increments_counted: int

    @property
    def money_ok(self) -> bool:
        return self.money_expected == self.money_found

    @property
    def counters_ok(self) -> bool:
        return self.increments_accepted == self.increments_counted


async def _check(node: phx.Node, config: _Config, stats: _Stats) -> _Outcome:
    from .demo_agents import INITIAL_BALANCE, Account, Counter

    await _quiesce(node)
    money = await _sum_all(
        [node.ref(Account, f"account-{i}") for i in range(config.accounts)], "get_balance"
    )
    counted = await _sum_all(
        [node.ref(Counter, f"counter-{i}") for i in range(config.counters)], "get"
    )
    return _Outcome(config.accounts * INITIAL_BALANCE, money, stats.increments_accepted, counted)


# --------------------------------------------------------------------------- the view


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.1f} MB"


def _render(node: phx.Node, config: _Config, stats: _Stats, elapsed: float) -> RenderableType:
    from rich.table import Table

    from .bench_local import rss_bytes

    agents = node.statistics().agents
    calls_s, casts_s = stats.rate()
    p50, p95 = stats.window_percentiles_us()
    until = "Ctrl-C to stop" if config.duration_s is None else f"of {config.duration_s:.0f} s"
    table = Table(
        title=f"Phoenix demo on {node.name}: {elapsed:5.1f} s {until}",
        title_justify="left",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("active agents", f"{agents.active_agents:,}")
    table.add_row("passivated agents", f"{agents.passive_agents:,}")
    table.add_row("calls/s", f"{calls_s:,.0f}")
    table.add_row("casts/s", f"{casts_s:,.0f}")
    table.add_row("call latency p50 / p95", f"{p50:,.0f} µs / {p95:,.0f} µs")
    table.add_row("errors rolled back", f"{stats.rolled_back:,}")
    table.add_row("overloaded / timed out", f"{stats.overloaded:,} / {stats.timeouts:,}")
    table.add_row("memory (RSS)", _mb(rss_bytes()))
    return table


def _plain_line(node: phx.Node, stats: _Stats, elapsed: float) -> str:
    from .bench_local import rss_bytes

    agents = node.statistics().agents
    calls_s, casts_s = stats.rate()
    p50, p95 = stats.window_percentiles_us()
    return (
        f"[{elapsed:6.1f}s] agents {agents.active_agents:,} active "
        f"{agents.passive_agents:,} passive | {calls_s:,.0f} calls/s {casts_s:,.0f} casts/s | "
        f"p50 {p50:,.0f} µs p95 {p95:,.0f} µs | rolled back {stats.rolled_back:,} | "
        f"RSS {_mb(rss_bytes())}"
    )


async def _show(
    node: phx.Node,
    config: _Config,
    stats: _Stats,
    started: float,
    update: Callable[[RenderableType], None] | None,
) -> None:
    for tick in itertools.count(1):
        await asyncio.sleep(_REFRESH_S)
        now = time.perf_counter()
        stats.tick(now)
        if update is not None:
            update(_render(node, config, stats, now - started))
        elif tick % _PLAIN_EVERY == 0:
            click.echo(_plain_line(node, stats, now - started))


def _summary(
    node: phx.Node, config: _Config, stats: _Stats, elapsed: float, outcome: _Outcome
) -> list[str]:
    agents = node.statistics().agents
    hist = stats.whole_run
    verdict = {True: "invariant OK", False: "INVARIANT VIOLATED"}
    return [
        f"Summary: {elapsed:.1f} s, {config.accounts + config.counters:,} agents "
        f"({config.accounts:,} accounts, {config.counters:,} counters), "
        f"{config.clients:,} clients, seed {config.seed}",
        f"  calls: {stats.calls:,} ({stats.calls / elapsed:,.0f}/s), "
        f"transfers: {stats.transfers:,}, casts: {stats.casts:,} ({stats.casts / elapsed:,.0f}/s)",
        f"  call latency p50 {hist.percentile_us(0.5):,.0f} µs, "
        f"p95 {hist.percentile_us(0.95):,.0f} µs, p99 {hist.percentile_us(0.99):,.0f} µs",
        f"  errors rolled back: {stats.rolled_back:,} ({stats.injected_rolled_back:,} failures "
        f"injected after a debit, {stats.overdrafts_refused:,} overdrafts refused, "
        f"{stats.other_errors:,} other)",
        f"  overloaded: {stats.overloaded:,}, timed out: {stats.timeouts:,}",
        f"  activations: {agents.activations:,}, passivations: {agents.passivations:,}, "
        f"messages handled: {agents.messages_handled:,}",
        f"  money: {outcome.money_expected:,} expected, {outcome.money_found:,} found: "
        f"{verdict[outcome.money_ok]}",
        f"  counters: {outcome.increments_accepted:,} increments accepted, "
        f"{outcome.increments_counted:,} counted: {verdict[outcome.counters_ok]}",
    ]


# --------------------------------------------------------------------------- driver


async def _main(config: _Config) -> bool:
    import phoenix_cluster as phx

    stats = _Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Ctrl-C ends the workload gracefully (the checks still run); a second one,
        # after the handler is removed below, interrupts for real.
        loop.add_signal_handler(signal.SIGINT, stop.set)

    async with phx.Node(settings=phx.Settings(name="demo")) as node:
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

            live = Live(_render(node, config, stats, 0.0), auto_refresh=False)
            live_cm = live

            def update(renderable: RenderableType) -> None:
                live.update(renderable, refresh=True)

        with live_cm:
            viewer = loop.create_task(_show(node, config, stats, started, update))
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
        for line in _summary(node, config, stats, elapsed, outcome):
            click.echo(line)
    return outcome.money_ok and outcome.counters_ok
