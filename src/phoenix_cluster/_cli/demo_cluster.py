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
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import click

from phoenix_cluster.testing import LocalCluster, free_port

from ..errors import PhoenixError
from .demo_agents import Tally
from .demo_cluster_workload import ClusterDemoConfig, DemoWorkload
from .demo_ledger import Verification

__all__ = ["ClusterDemoConfig", "run_cluster"]

_IMPORTS = ["phoenix_cluster._cli.demo_agents"]
_NODES = 3
_VICTIM = 2  # node 0 serves the dashboard; kill another one
_DETECT_DEADLINE_S = 30.0
_RECOVER_DEADLINE_S = 40.0
_REBALANCE_DEADLINE_S = 60.0
_SETTLED_S = 1.0  # the restarted node's agent count unchanged this long: rebalanced
_SETTLED_SHARE = 0.98
"""...once it holds at least this share of the agents it hosted before the kill (the
same members make the same ring, so the same keys have it as their home); a count that
merely stalls on a loaded machine is not the end of the rebalancing."""


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


class _ClusterDemo(DemoWorkload):
    """The story: start, activate, kill, fail over, restart, rebalance, verify."""

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
            except (PhoenixError, TimeoutError, OSError):
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
                    except PhoenixError:
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
