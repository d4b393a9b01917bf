"""A Jepsen-style checker: a workload of counters and sets under a nemesis.

Clients add numbered items to :class:`ChaosCounter` agents on a :class:`LocalCluster`
while a nemesis kills (-9) and restarts nodes, restarts them gracefully (SIGTERM, one node
or a roll of every node, each started again at once and the next taken as soon as it is
READY), pauses them (SIGSTOP) and cuts one off the network (when ``iptables`` is
usable), healing after each fault. Every operation is
recorded with its outcome — ``ok`` (acknowledged), ``failed`` (a definite error: nothing
happened) or ``unknown`` (an indefinite one). The check at the end, per agent:

- every acknowledged add is present (no committed write lost);
- every item present was sent by some client (no phantom);
- no add is present twice (no duplicate, no two activations both committing);
- no add that failed definitely is present;
- the counter lies in [acknowledged, acknowledged + unknown];
- every agent answers again once the cluster has healed.

Seeded and reproducible in its choices (the timing of a real cluster is not). Used by
``tests/cluster/test_chaos.py`` (short runs) and ``phx chaos --minutes N`` (long ones).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from .._node import Node, NodeStatus
from .._ring.partitions import PARTITIONS
from ..errors import PhoenixError
from ._local_cluster import LocalCluster
from .chaos_agents import ChaosCounter

__all__ = [
    "CHAOS_IMPORTS",
    "FAULTS",
    "ChaosReport",
    "History",
    "Nemesis",
    "Verdict",
    "check",
    "choose_faults",
    "judge",
    "run_chaos",
    "start_writers",
    "verdict",
    "workload",
]

LEADERS_WAIT_S = 20.0
"""How long a heal waits for every partition to have a leader before striking again."""

CHAOS_IMPORTS = ["phoenix_cluster.testing.chaos_agents"]
CHAOS_STARTUP_TIMEOUT_S = 120.0
"""How long a node of a chaos run may take to print READY, at the start and after each
restart: a run lasts minutes, and on a loaded 2-core machine five nodes starting at once
(each electing its share of the partitions) took more than LocalCluster's default 30 s.
A slow start is not a verdict; a run that gives up on one checks nothing."""
"""What the cluster's nodes import to host :class:`ChaosCounter`."""

_log = logging.getLogger("phoenix_cluster.chaos")


@dataclass
class History:
    """Every operation by key and outcome."""

    ok: dict[str, list[str]] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    """Failed operations by error type (what the callers saw)."""
    samples: dict[str, list[str]] = field(default_factory=dict)
    """The first few messages of each error type."""

    def record(self, outcome: str, key: str, item: str) -> None:
        getattr(self, outcome).setdefault(key, []).append(item)

    @property
    def acknowledged(self) -> int:
        return sum(len(v) for v in self.ok.values())

    def counts(self) -> dict[str, int]:
        return {name: sum(len(v) for v in getattr(self, name).values())
                for name in ("ok", "unknown", "failed")}


@dataclass
class ChaosReport:
    """The outcome of a run: operation counts, the faults injected, and any violation."""

    seed: int
    counts: dict[str, int]
    faults: list[str]
    violations: list[str]
    unhealed: list[str] = field(default_factory=list)
    """Heals after which some partition still had no leader (availability, not safety)."""

    @property
    def ok(self) -> bool:
        return not self.violations


async def workload(client: Node, keys: list[str], history: History,
                   stop: asyncio.Event, rng: random.Random, worker: int) -> None:
    """One writer: random adds until ``stop``, each recorded with its outcome."""
    n = 0
    while not stop.is_set():
        key = rng.choice(keys)
        item = f"w{worker}-{n}"
        n += 1
        try:
            await client.ref(ChaosCounter, key).options(timeout=2.0).add(1, item)
        except PhoenixError as exc:
            history.record("failed" if exc.definite else "unknown", key, item)
            name = type(exc).__name__
            history.errors[name] += 1
            seen = history.samples.setdefault(name, [])
            if len(seen) < 5:
                seen.append(exc.message)
            await asyncio.sleep(0.02)
        else:
            history.record("ok", key, item)


def start_writers(client: Node, keys: list[str], history: History, stop: asyncio.Event,
                  rng: random.Random, workers: int) -> list[asyncio.Task[None]]:
    """``workers`` concurrent :func:`workload` writers, each seeded from ``rng``."""
    return [asyncio.create_task(workload(client, keys, history, stop,
                                         random.Random(rng.random()), w))
            for w in range(workers)]


async def _read(client: Node, key: str, deadline_s: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        try:
            state: dict[str, object] = await client.ref(ChaosCounter, key).read()
            return state
        except PhoenixError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@dataclass
class Verdict:
    """What the end-of-run read found against the history."""

    violations: list[str] = field(default_factory=list)
    lost: int = 0
    """Acknowledged adds missing (committed writes lost)."""
    phantoms: int = 0
    """Items present that no client ever sent (made up or corrupted state)."""


async def check(client: Node, keys: list[str], history: History) -> list[str]:
    """The end-of-run checks; returns the violations found (empty: all hold)."""
    return (await verdict(client, keys, history)).violations


async def verdict(client: Node, keys: list[str], history: History) -> Verdict:
    """Read every key (retrying until it answers, up to 30 s) and judge the history."""
    states: dict[str, dict[str, object] | str] = {}
    for key in keys:
        try:
            states[key] = await _read(client, key, 30.0)
        except PhoenixError as exc:
            states[key] = exc.message
    return judge(states, history)


def judge(states: dict[str, dict[str, object] | str], history: History) -> Verdict:
    """The checks of the module docstring on the final ``states`` (per key, the agent's
    ``read()`` or the message of the error that kept it from answering)."""
    out = Verdict()
    sent = {item for outcomes in (history.ok, history.unknown, history.failed)
            for items in outcomes.values() for item in items}
    for key, state in states.items():
        if isinstance(state, str):
            out.violations.append(f"{key}: never answered after the heal ({state})")
            continue
        items = state["items"]
        total = state["total"]
        assert isinstance(items, list) and isinstance(total, int)
        present = set(items)
        acked = history.ok.get(key, [])
        missing = [i for i in acked if i not in present]
        if missing:
            out.lost += len(missing)
            out.violations.append(
                f"{key}: {len(missing)} acknowledged adds lost, e.g. {missing[:3]}")
        phantoms = sorted(present - sent)
        if phantoms:
            out.phantoms += len(phantoms)
            out.violations.append(f"{key}: {len(phantoms)} items nobody added, e.g. "
                                  f"{phantoms[:3]}")
        if len(items) != len(present):
            out.violations.append(f"{key}: {len(items) - len(present)} adds applied twice")
        ran = [i for i in history.failed.get(key, []) if i in present]
        if ran:
            out.violations.append(f"{key}: {len(ran)} adds that failed definitely are present")
        unknown = len(history.unknown.get(key, []))
        if not len(acked) <= total <= len(acked) + unknown:
            out.violations.append(f"{key}: total {total} outside [{len(acked)}, "
                                  f"{len(acked) + unknown}]")
    return out


FAULTS = ("kill", "pause", "restart", "roll", "isolate")
"""What the nemesis can do: SIGKILL, SIGSTOP, SIGTERM and start again, a roll of every
node, cutting one node off the network (root and iptables only)."""


def choose_faults(kinds: Sequence[str], no_network_faults: str | None) -> list[str]:
    """The fault kinds a nemesis uses, in :data:`FAULTS` order: ``kinds`` without
    ``isolate`` when network faults are unavailable (``no_network_faults`` says why).

    Raises:
        ValueError: a kind that is not one of :data:`FAULTS`, or none left to use.
    """
    unknown = set(kinds) - set(FAULTS)
    if unknown or not kinds:
        raise ValueError(f"faults must be some of {', '.join(FAULTS)}, got "
                         f"{', '.join(sorted(unknown)) or 'none'}")
    chosen = [k for k in FAULTS if k in kinds and (k != "isolate" or no_network_faults is None)]
    if not chosen:
        raise ValueError(f"isolate is the only fault asked for and it is unavailable: "
                         f"{no_network_faults}")
    return chosen


class Nemesis:
    """Strikes a :class:`LocalCluster` with one fault of ``kinds`` at a time and heals.

    ``isolate`` is left out where network faults are unavailable (``no_network_faults``
    says why)."""

    def __init__(self, cluster: LocalCluster, client: Node, rng: random.Random,
                 say: Callable[[str], None], kinds: Sequence[str] = FAULTS) -> None:
        self.cluster = cluster
        self.client = client
        self.rng = rng
        self.say = say
        self.faults: list[str] = []
        self.unhealed: list[str] = []
        self._silent: list[str] = []
        self.no_network_faults = LocalCluster.network_faults_unavailable()
        self.network = self.no_network_faults is None
        self.kinds = choose_faults(kinds, self.no_network_faults)

    async def revive(self) -> None:
        """Restart every node that exited (killed, or downed by split-brain), heal."""
        cluster = self.cluster
        cluster.heal()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90.0
        while True:
            # A node woken from a pause may learn it was declared dead and down itself
            # a moment later: keep restarting what exits until the cluster converges.
            # Restarted together: a node says READY only once it joined, so when every
            # node had exited, one started alone would wait for the others forever.
            gone = [node for node in cluster.nodes if not node.running]
            for node in gone:
                if node.process is not None:
                    await cluster.wait(node.index)
                self.say(f"nemesis: restarting {node.name}")
            await asyncio.gather(*(cluster.start_node(node.index) for node in gone))
            try:
                await cluster.wait_converged(timeout_s=5.0)
            except TimeoutError:
                if loop.time() > deadline:
                    raise
                continue
            # Healed means every partition has a leader again, which has caught up the
            # restarted replicas: striking before that could leave a partition with a
            # majority of replicas that restarted empty, which refuses to serve.
            led_by = loop.time() + LEADERS_WAIT_S
            while loop.time() < led_by:
                led = await self._partitions_led()
                if led >= PARTITIONS:
                    return
                await asyncio.sleep(0.2)
            silent = f"; no status from {'; '.join(self._silent)}" if self._silent else ""
            self.unhealed.append(f"{PARTITIONS - led} of {PARTITIONS} partitions without a "
                                 f"leader {LEADERS_WAIT_S:.0f} s after the heal "
                                 f"(after {self.faults[-1] if self.faults else 'start'})"
                                 f"{silent}")
            self.say(f"nemesis: {self.unhealed[-1]}")
            return

    async def _partitions_led(self) -> int:
        rpc = self.client._rpc
        assert rpc is not None
        led = 0
        self._silent = []
        for node in self.cluster.nodes:
            try:
                reply = await rpc.call(node.address, "node", "status", b"", 2.0)
            except PhoenixError as exc:
                self._silent.append(f"{node.name}: {exc.message}")
                continue
            led += msgspec.msgpack.decode(reply, type=NodeStatus).leading
        return led

    async def _restart_gracefully(self, index: int) -> None:
        cluster = self.cluster
        code = await cluster.stop(index, timeout_s=60.0)
        if code != 0:
            self.say(f"nemesis: {cluster.nodes[index].name} exited {code} on SIGTERM")
        await cluster.start_node(index)

    async def strike(self) -> None:
        cluster, rng = self.cluster, self.rng
        kind = rng.choice(self.kinds)
        index = rng.randrange(len(cluster.nodes))
        name = cluster.nodes[index].name
        hold = rng.uniform(0.5, 3.0)
        self.faults.append(f"{kind} {name} {hold:.1f}s")
        self.say(f"nemesis: {kind} {name} for {hold:.1f} s")
        try:
            if kind == "restart":
                # A graceful restart (SIGTERM, start again at once under the same name).
                await self._restart_gracefully(index)
            elif kind == "roll":
                # Every node in turn, the next as soon as the last one is READY.
                for i in range(len(cluster.nodes)):
                    await self._restart_gracefully((index + i) % len(cluster.nodes))
            elif kind == "kill":
                cluster.kill(index)
                await asyncio.sleep(hold)
            elif kind == "pause":
                cluster.pause(index)
                await asyncio.sleep(hold)
                cluster.resume(index)
            else:
                cluster.isolate(index)
                await asyncio.sleep(hold + 3.0)  # long enough for the others to decide
        except RuntimeError:
            # The node exited on its own after the last heal (downed by split-brain, a
            # pause woke it declared dead): that was the fault; revive restarts it.
            self.say(f"nemesis: {name} had exited on its own")
        await self.revive()
        self.say("nemesis: healed")

    async def run(self, seconds: float, pause_between_s: float,
                  progress: Callable[[], str]) -> None:
        """Strike, heal and wait ``pause_between_s``, again and again for ``seconds``;
        after each heal say ``progress()``."""
        if "isolate" not in self.kinds and self.no_network_faults is not None:
            self.say(f"nemesis: no isolation: {self.no_network_faults}")
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            await asyncio.sleep(pause_between_s)
            if loop.time() >= end:
                break
            await self.strike()
            self.say(progress())


async def run_chaos(*, seconds: float, seed: int, nodes: int = 3, keys: int = 24,
                    workers: int = 8, pause_between_s: float = 2.0,
                    data_dir: str | None = None, faults: Sequence[str] = FAULTS,
                    say: Callable[[str], None] | None = None) -> ChaosReport:
    """Run the workload for ``seconds`` under the nemesis, heal, check; see the module
    docstring. ``seed`` fixes every random choice (keys, faults, victims, durations).
    With ``data_dir`` the nodes keep their replicas there (restarts reload them);
    ``faults`` are the kinds the nemesis picks from (:data:`FAULTS`)."""
    rng = random.Random(seed)
    tell = say if say is not None else _log.info
    names = [f"chaos-{i}" for i in range(keys)]
    history = History()
    node_args = ["--data-dir", data_dir] if data_dir is not None else []
    async with LocalCluster(nodes, CHAOS_IMPORTS, node_args=node_args,
                            startup_timeout_s=CHAOS_STARTUP_TIMEOUT_S) as cluster:
        client = await cluster.client(listen=None)
        stop = asyncio.Event()
        tasks = start_writers(client, names, history, stop, rng, workers)
        nemesis = Nemesis(cluster, client, random.Random(rng.random()), tell, faults)
        try:
            await nemesis.run(seconds, pause_between_s,
                              lambda: f"operations so far: {history.counts()}")
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await nemesis.revive()
        violations = await check(client, names, history)
    return ChaosReport(seed, history.counts(), nemesis.faults, violations, nemesis.unhealed)
