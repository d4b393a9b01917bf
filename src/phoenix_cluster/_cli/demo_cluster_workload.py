"""The workload of ``phx demo`` and its accounting: what the story runs against.

:class:`DemoWorkload` holds the state the live view reads (phase, members, active agents per
node, traffic, the ledger of acknowledged writes) and the background tasks: paced writers at
the offered rate, a poll of each node's agent count, and the view's tick. Every write is
counted in the phase the caller saw it in, with the calls the client library retried apart
from the failures. The story itself (kill, failover, restart, verification) is
``demo_cluster.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import click

from .._agents.ref import AgentRef
from .._membership.snapshot import Member
from .._node import Node
from ..errors import PhoenixError
from ..testing import LocalCluster
from .demo_ledger import Ledger, PhaseCalls, Timeline, Traffic

__all__ = ["ClusterDemoConfig", "DemoWorkload"]

_TICK_S = 0.25
_WINDOW_TICKS = 4


@dataclass(frozen=True, slots=True)
class ClusterDemoConfig:
    agents: int
    seconds: float
    """Seconds of steady workload before the kill and after the restart (half between)."""
    rate: int
    workers: int
    forever: bool
    seed: int
    live: bool


class DemoWorkload:
    """The demo's shared state, its writers and pollers; the story subclasses it."""

    def __init__(self, config: ClusterDemoConfig) -> None:
        self.config = config
        self.ledger = Ledger(config.agents)
        self.traffic = Traffic(_WINDOW_TICKS)
        self.timeline = Timeline()
        self.dashboard: str | None = None
        self.active: dict[str, int | None] = {}
        self.events: deque[str] = deque(maxlen=8)
        self.stop = asyncio.Event()  # Ctrl-C: skip to the verification
        self.workload_done = asyncio.Event()
        self.cluster: LocalCluster | None = None
        self.client: Node | None = None
        self.refs: list[AgentRef] = []
        self._say: Callable[[str], None] = click.echo
        self.calls_by_phase: dict[str, PhaseCalls] = {}
        """The writes of each phase, in story order."""
        self._retried_at_phase_start = 0
        self._phase = ""
        self.phase = "starting"

    # ------------------------------------------------------------------ helpers

    @property
    def phase(self) -> str:
        """What the story is doing now (the live view shows it)."""
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        if name == self._phase:
            return
        if self._phase:
            self.phase_calls().retried = self.retried_in_phase()
        self._phase = name
        self._retried_at_phase_start = self._calls_retried()
        self.calls_by_phase.setdefault(name, PhaseCalls())

    def phase_calls(self) -> PhaseCalls:
        """The writes of the current phase so far."""
        return self.calls_by_phase.setdefault(self._phase, PhaseCalls())

    def _calls_retried(self) -> int:
        return 0 if self.client is None else self.client.statistics().calls_retried

    def retried_in_phase(self) -> int:
        """Calls the client library retried since the current phase began."""
        return self.phase_calls().retried + self._calls_retried() - self._retried_at_phase_start

    def elapsed(self) -> float:
        return time.monotonic() - self.timeline.started

    def event(self, text: str) -> None:
        """Print a step of the story (above the live view on a terminal)."""
        line = f"[{self.elapsed():6.1f}s] {text}"
        self.events.append(line)
        self._say(line)

    async def pause(self, seconds: float) -> None:
        """Let the workload run for ``seconds`` (less after Ctrl-C)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def node_names(self) -> list[str]:
        assert self.cluster is not None
        return [n.name for n in self.cluster.nodes]

    def members(self) -> dict[str, Member]:
        """The cluster members (not clients) as the client sees them."""
        if self.client is None:
            return {}
        return {m.name: m for m in self.client.members() if m.role == "member"}

    async def write(self, agent: int) -> bool:
        """One write to tally ``agent``; recorded in the ledger if acknowledged."""
        started = time.perf_counter_ns()
        try:
            _, host = await self.refs[agent].add(1)
        except PhoenixError as exc:
            self.traffic.failure(type(exc).__name__)
            calls = self.phase_calls()  # the phase in which the caller saw it
            calls.calls += 1
            calls.failed += 1
            calls.first_error = calls.first_error or f"{type(exc).__name__}: {exc}"
            if not exc.definite:
                self.ledger.unknown_outcome(agent)
            return False
        self.traffic.success(time.perf_counter_ns() - started)
        self.phase_calls().calls += 1
        self.ledger.ack(agent, str(host))
        return True

    async def until_written(self, agents: list[int], deadline_s: float,
                            concurrency: int = 64) -> bool:
        """Write to each of ``agents`` until it acknowledges; ``False`` at the deadline."""
        gate = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s

        async def one(agent: int) -> bool:
            async with gate:
                while not await self.write(agent):
                    if loop.time() > deadline or self.stop.is_set():
                        return False
                    await asyncio.sleep(0.05)
                return True

        results = await asyncio.gather(*(one(a) for a in agents))
        return all(results)

    # ------------------------------------------------------------------ background

    async def _worker(self, index: int) -> None:
        config = self.config
        rng = random.Random(config.seed * 1_000_003 + index)
        # Paced: each worker offers rate/workers writes a second on a fixed schedule, so
        # the latency shown is the cluster's, not a queue of the demo's own making.
        interval = config.workers / config.rate if config.rate else 0.0
        next_at = time.monotonic() + rng.random() * interval
        while not self.workload_done.is_set():
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + interval, time.monotonic() - interval)
            await self.write(rng.randrange(config.agents))

    async def _poll_status(self) -> None:
        """Active agents per node, from each node's ``$node.status`` (twice a second)."""
        assert self.cluster is not None and self.client is not None
        client = self.client

        async def one(name: str, address: str) -> tuple[str, int | None]:
            try:
                return name, (await client.peer_status(address, 1.0)).agents
            except (PhoenixError, TimeoutError, OSError):
                return name, None

        while True:
            nodes = [(n.name, n.address) for n in self.cluster.nodes]
            self.active.update(await asyncio.gather(*(one(*n) for n in nodes)))
            await asyncio.sleep(0.5)

    async def _monitor(self, render: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            self.traffic.tick(time.perf_counter())
            render()
