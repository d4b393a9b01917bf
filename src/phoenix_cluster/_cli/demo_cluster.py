"""``phx demo``: three real nodes, a workload, a node killed and brought back.

The story, in phases (each waits for what it shows, with a deadline, and says so when
something did not happen):

1. start three ``phx node`` processes on loopback (:class:`LocalCluster`); node 0 serves
   the read-only HTTP endpoint and dashboard when that is built;
2. activate the tally agents from a client node in this process, one write each, then
   keep writing to random tallies at a steady rate, recording every acknowledged write
   with the node that acknowledged it (:class:`.demo_ledger.Ledger`);
3. SIGKILL node 2; watch the client's member table until it is suspect, then dead;
   touch every agent that lived on it until each answers again from its new home
   (failover), while the workload goes on;
4. restart node 2 (a new incarnation); the survivors' rebalancers hand it back the agents
   whose home it is again, state included; wait until its agent count settles;
5. stop the workload, read every tally, and verify the acknowledged writes.

Every acknowledged write was committed to a majority of its agent's replicas before the
reply, so the agents of the killed node come back at their new homes with their state.
Every acknowledged write must be present at the end — the killed node's, the survivors'
and those carried by rebalancing migrations — or the demo exits 1.

Calls use the library's default timeout. A call that cannot reach its owner before
anything was sent (the killed node refuses connections) is retried by the client library
until the membership moves the key to a survivor; the view counts those calls apart
("retried by the client library") from the failures a caller sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import click

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, free_port

from .demo_agents import Tally
from .demo_ledger import Ledger, PhaseCalls, Timeline, Traffic, Verification

__all__ = ["ClusterDemoConfig", "run_cluster"]

_IMPORTS = ["phoenix_cluster._cli.demo_agents"]
_NODES = 3
_VICTIM = 2  # node 0 serves the dashboard; kill another one
_TICK_S = 0.25
_WINDOW_TICKS = 4
_DETECT_DEADLINE_S = 30.0
_RECOVER_DEADLINE_S = 40.0
_REBALANCE_DEADLINE_S = 60.0
_SETTLED_S = 1.0  # the restarted node's agent count unchanged this long: rebalanced
_SETTLED_SHARE = 0.98
"""...once it holds at least this share of the agents it hosted before the kill (the
same members make the same ring, so the same keys have it as their home); a count that
merely stalls on a loaded machine is not the end of the rebalancing."""


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


def run_cluster(config: ClusterDemoConfig) -> bool:
    """Run the three-node demo; ``True`` if every acknowledged write is accounted for."""
    from .bench_local import loop_factory

    _, factory = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_ClusterDemo(config).run())


def dashboard_supported() -> bool:
    """Whether ``phx node`` has the ``--http`` endpoint (the dashboard's home)."""
    from .node import node as node_command

    return any("--http" in p.opts for p in node_command.params)


async def _http_live(url: str) -> bool:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health/live", timeout=2.0) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    return await asyncio.to_thread(probe)


class _ClusterDemo:
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
        self.client: phx.Node | None = None
        self.refs: list[phx.AgentRef] = []
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

    def members(self) -> dict[str, phx.Member]:
        """The cluster members (not clients) as the client sees them."""
        if self.client is None:
            return {}
        return {m.name: m for m in self.client.members() if m.role == "member"}

    async def write(self, agent: int) -> bool:
        """One write to tally ``agent``; recorded in the ledger if acknowledged."""
        started = time.perf_counter_ns()
        try:
            _, host = await self.refs[agent].add(1)
        except phx.PhoenixError as exc:
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
            except (phx.PhoenixError, TimeoutError, OSError):
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

    # ------------------------------------------------------------------ phases

    async def _start(self) -> LocalCluster:
        cluster = LocalCluster(_NODES, imports=_IMPORTS)
        http_port: int | None = None
        if dashboard_supported():
            http_port = free_port()
            cluster.nodes[0].extra_args = ["--http", f"127.0.0.1:{http_port}"]
        self.event(f"starting {_NODES} phx node processes on loopback…")
        await cluster.__aenter__()
        self.cluster = cluster
        self.event("cluster converged: " + ", ".join(
            f"{n.name} ({n.address}, pid {n.process.pid if n.process else '?'})"
            for n in cluster.nodes))
        if http_port is not None and await _http_live(f"http://127.0.0.1:{http_port}"):
            self.dashboard = f"http://127.0.0.1:{http_port}/"
            self.event(f"dashboard: {self.dashboard} (served by {cluster.nodes[0].name})")
        elif http_port is not None:
            self.event("dashboard: not answering on node-0's --http port (skipped)")
        else:
            self.event("dashboard: not built yet")
        return cluster

    async def _activate(self) -> None:
        assert self.client is not None
        client = self.client
        self.refs = [client.ref(Tally, f"tally-{i}") for i in range(self.config.agents)]
        self.phase = "activating agents"
        started = time.monotonic()
        ok = await self.until_written(list(range(self.config.agents)), 60.0, concurrency=256)
        self.timeline.activated_s = time.monotonic() - started
        if not ok:
            self.timeline.problems.append("not every agent answered its first write")
        spread = ", ".join(f"{n} {c:,}" for n, c in sorted(self.ledger.hosts_per_node().items()))
        self.event(f"{self.config.agents:,} tally agents activated in "
                   f"{self.timeline.activated_s:.1f} s: {spread}")

    async def _kill(self) -> None:
        assert self.cluster is not None
        victim = self.cluster.nodes[_VICTIM].name
        hosted = self.ledger.hosted_by(victim)
        self.timeline.home_of_victim = len(hosted)
        self.phase = f"{victim} killed"
        self.ledger.killed(victim)
        self.cluster.kill(_VICTIM)
        self.timeline.killed = time.monotonic()
        self.event(f"SIGKILL {victim} (it hosted {len(hosted):,} agents); the workload goes on")
        await self._detect(victim)
        if self.timeline.dead is None:
            return
        self.phase = f"failover from {victim}"
        ok = await self.until_written(hosted, _RECOVER_DEADLINE_S, concurrency=256)
        if not ok:
            self.timeline.problems.append(
                f"not every agent of {victim} answered again within {_RECOVER_DEADLINE_S:.0f} s")
            return
        self.timeline.recovered = time.monotonic()
        self.timeline.failed_over = len(hosted)
        now_on: dict[str, int] = {}
        for agent in hosted:
            host = self.ledger.last_host[agent]
            if host is not None:
                now_on[host] = now_on.get(host, 0) + 1
        spread = ", ".join(f"{c:,} on {n}" for n, c in sorted(now_on.items()))
        self.event(f"failover: all {len(hosted):,} agents of {victim} answer again ({spread}), "
                   f"{self.timeline.since_kill(self.timeline.recovered):.1f} s after the kill; "
                   "their state came back from their replicas")
        killed, failover = self.calls_by_phase[f"{victim} killed"], self.phase_calls()
        self.event(f"calls since the kill: {killed.calls + failover.calls:,}, "
                   f"{killed.failed + failover.failed:,} failed, "
                   f"{killed.retried + self.retried_in_phase():,} retried by the client "
                   "library (a retried call that answered is not a failure)")

    async def _detect(self, victim: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DETECT_DEADLINE_S
        timeline = self.timeline
        while loop.time() < deadline and not self.stop.is_set():
            member = self.members().get(victim)
            status = "dead" if member is None else member.status
            now = time.monotonic()
            if status == "suspect" and timeline.suspect is None:
                timeline.suspect = now
                self.event(f"detection: {victim} is suspect "
                           f"({timeline.since_kill(now):.1f} s after the kill)")
            if status in ("dead", "left"):
                timeline.dead = now
                self.event(f"detection: {victim} is dead "
                           f"({timeline.since_kill(now):.1f} s after the kill); "
                           "its agents get new homes on the survivors")
                return
            await asyncio.sleep(0.02)
        if not self.stop.is_set():
            timeline.problems.append(f"{victim} not declared dead within "
                                     f"{_DETECT_DEADLINE_S:.0f} s")

    async def _restart(self) -> list[str | None]:
        assert self.cluster is not None and self.client is not None
        victim = self.cluster.nodes[_VICTIM].name
        hosts_before = list(self.ledger.last_host)
        self.phase = f"{victim} restarting"
        self.ledger.restarted(victim)
        self.timeline.restarted = time.monotonic()
        await self.cluster.restart(_VICTIM)
        process = self.cluster.nodes[_VICTIM].process
        self.event(f"{victim} restarted (pid {process.pid if process else '?'}); "
                   "rebalancing hands it back the agents whose home it is")
        self.phase = f"rebalancing to {victim}"
        address = self.cluster.nodes[_VICTIM].address
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REBALANCE_DEADLINE_S
        last, stable_since = -1, time.monotonic()
        while not self.stop.is_set():
            try:
                count = (await self.client.peer_status(address, 1.0)).agents
            except (phx.PhoenixError, TimeoutError, OSError):
                count = -1
            now = time.monotonic()
            if count != last:
                last, stable_since = count, now
            elif (count >= self.timeline.home_of_victim * _SETTLED_SHARE
                  and now - stable_since >= _SETTLED_S) or count == self.timeline.home_of_victim:
                self.timeline.rebalanced = stable_since
                self.timeline.moved_back = count
                self.event(f"rebalanced: {victim} hosts {count:,} agents, settled "
                           f"{stable_since - self.timeline.restarted:.1f} s after the restart")
                break
            if loop.time() > deadline:
                self.timeline.problems.append(
                    f"{victim} did not settle within {_REBALANCE_DEADLINE_S:.0f} s")
                break
            await asyncio.sleep(0.1)
        return hosts_before

    async def _verify(self, hosts_before: list[str | None]) -> Verification:
        """Read every tally (retrying until each answers) and check the ledger."""
        found = [0] * self.config.agents
        final_hosts = [""] * self.config.agents
        gate = asyncio.Semaphore(256)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0

        async def read(agent: int) -> None:
            async with gate:
                while True:
                    try:
                        count, host = await self.refs[agent].read()
                    except phx.PhoenixError:
                        if loop.time() > deadline:
                            raise
                        await asyncio.sleep(0.05)
                        continue
                    found[agent], final_hosts[agent] = int(count), str(host)
                    return

        await asyncio.gather(*(read(a) for a in range(self.config.agents)))
        return self.ledger.verify(found, final_hosts, hosts_before)

    # ------------------------------------------------------------------ driver

    async def run(self) -> bool:
        from .demo_cluster_view import LiveView, print_summary

        config = self.config
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        background: list[asyncio.Task[Any]] = []
        workers: list[asyncio.Task[None]] = []
        view = LiveView(self, live=config.live)
        verification: Verification | None = None
        try:
            with view:
                self._say = view.say
                self.event(f"phx demo: {_NODES} nodes, {config.agents:,} agents, "
                           f"{config.rate:,} writes/s offered by {config.workers} workers")
                cluster = await self._start()
                try:
                    self.client = await cluster.client()
                    background += [loop.create_task(self._poll_status()),
                                   loop.create_task(self._monitor(view.refresh))]
                    await self._activate()
                    workers += [loop.create_task(self._worker(i))
                                for i in range(config.workers)]
                    hosts_before = await self._story()
                    self.phase = "verifying"
                    self.workload_done.set()
                    await asyncio.gather(*workers, return_exceptions=True)
                    self.event("workload stopped; reading every agent to verify "
                               "the acknowledged writes…")
                    verification = await self._verify(hosts_before)
                finally:
                    self.workload_done.set()
                    for task in [*background, *workers]:
                        task.cancel()
                    await asyncio.gather(*background, *workers, return_exceptions=True)
                    self.phase = "done"
                    self.event("stopping the cluster…")
                    await _stop_fast(cluster)
        finally:
            self._say = click.echo
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)
        assert verification is not None
        print_summary(self, verification)
        return verification.ok and not self.timeline.problems

    async def _story(self) -> list[str | None]:
        """The steady run, the kill and the restart; returns the hosts before the restart."""
        config = self.config
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("steady workload", lambda: self.pause(config.seconds)),
            ("kill", self._kill),
            ("workload after failover", lambda: self.pause(config.seconds / 2)),
        ]
        for phase, step in steps:
            if self.stop.is_set():
                break
            self.phase = phase
            await step()
        hosts_before = list(self.ledger.last_host)
        if self.stop.is_set():
            return hosts_before
        hosts_before = await self._restart()
        self.phase = "workload after rebalancing" + (" (Ctrl-C to stop)" if config.forever
                                                     else "")
        if config.forever:
            self.timeline.story_told = True  # from here on Ctrl-C is the expected end
            await self.stop.wait()
        else:
            await self.pause(config.seconds)
        return hosts_before

    def _interrupt(self) -> None:
        if not self.stop.is_set():
            self.timeline.interrupted = not self.timeline.story_told
            self.event("Ctrl-C: stopping the workload and verifying (Ctrl-C again to abort)")
            self.stop.set()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


async def _stop_fast(cluster: LocalCluster) -> None:
    """SIGKILL the nodes: the demo's state is thrown away, a graceful leave would only
    migrate it around while everyone leaves."""
    for node in cluster.nodes:
        if node.running:
            cluster.kill(node.index)
    await cluster.aclose()
