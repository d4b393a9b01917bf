"""A register workload under the nemesis, checked for linearizability.

Many concurrent clients (15 by default) read, write and compare-and-set a few
:class:`ChaosRegister` agents on a :class:`LocalCluster` while the nemesis of
:mod:`phoenix_cluster.testing.chaos` kills, pauses, restarts and isolates nodes. Every
operation is recorded with its invocation and completion time (the client's monotonic
clock) and its outcome: ``ok``, ``fail`` (a definite error: it did not happen) or
``info`` (an indefinite one, such as a timeout: it may have happened, at any time after
it was invoked). Written values are unique, so a read names the write it saw. After the
last heal every key is read once more (those reads are part of the history, so an
acknowledged write that was lost shows up as a read that no order can explain), then
:func:`~phoenix_cluster.testing.linearizability.check_history` decides, key by key,
whether some order of the operations, each at an instant inside its interval, is a legal
run of one register.

As in Jepsen's independent keys, each key takes ``ops_per_key`` operations and is then
replaced by a fresh one: the search is exponential in the worst case, and short
histories per key keep every verdict decided while the run as a whole goes on for as
long as you like. Used by ``tests/cluster/test_register_chaos.py`` and
``phx chaos --workload register``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._node import Node
from ..errors import PhoenixError
from ._local_cluster import LocalCluster
from .chaos import CHAOS_IMPORTS, CHAOS_STARTUP_TIMEOUT_S, FAULTS, Nemesis
from .chaos_agents import ChaosRegister
from .linearizability import DEFAULT_MAX_STEPS, KeyResult, Op, OpKind, check_history

__all__ = ["FINAL_READER", "RegisterReport", "RegisterWorkload", "lost_writes", "run_register"]

_log = logging.getLogger("phoenix_cluster.chaos")

_KINDS: list[OpKind] = ["read", "write", "cas"]
_WEIGHTS = [2, 1, 1]
"""Half reads, a quarter writes, a quarter compare-and-sets."""


@dataclass
class RegisterReport:
    """The outcome of a register run: per key the checker's verdict, the operations by
    outcome, the faults injected, and keys that never answered after the heal."""

    seed: int
    nodes: int
    seconds: float
    results: dict[str, KeyResult]
    counts: dict[str, int]
    """Operations by outcome: ``ok``, ``fail`` (definite error), ``info`` (indefinite)."""
    faults: list[str]
    unhealed: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    """Keys whose final read never answered (a violation: the cluster lost them)."""
    lost: dict[str, int] = field(default_factory=dict)
    """Acknowledged writes the final reads show lost, by key (:func:`lost_writes`)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed operations by error type."""
    check_seconds: float = 0.0
    """How long the linearizability check took."""
    history: list[Op] = field(default_factory=list)

    @property
    def indefinite_share(self) -> float:
        """The share of operations whose outcome stayed unknown (``info``)."""
        total = sum(self.counts.values())
        return self.counts.get("info", 0) / total if total else 0.0

    @property
    def violations(self) -> list[str]:
        found = [f"{key}: not linearizable: {r.explanation}"
                 for key, r in self.results.items() if r.linearizable is False]
        found += [f"{key}: {n} acknowledged writes lost" for key, n in self.lost.items()]
        return found + [f"{key}: never answered after the heal" for key in self.unanswered]

    @property
    def undecided(self) -> list[str]:
        return [key for key, r in self.results.items() if r.linearizable is None]

    @property
    def ok(self) -> bool:
        """No violation and every key decided."""
        return not self.violations and not self.undecided

    def to_json(self) -> dict[str, object]:
        return {
            "workload": "register", "seed": self.seed, "nodes": self.nodes,
            "seconds": round(self.seconds, 1), "ok": self.ok, "counts": self.counts,
            "indefinite_share": round(self.indefinite_share, 4),
            "keys": {key: {"linearizable": r.linearizable, "counts": r.counts,
                           "steps": r.steps, "explanation": r.explanation}
                     for key, r in self.results.items()},
            "violations": self.violations, "undecided": self.undecided,
            "unanswered": self.unanswered, "lost": sum(self.lost.values()),
            "faults": self.faults,
            "unhealed": self.unhealed, "errors": self.errors,
            "check_seconds": round(self.check_seconds, 2),
        }


FINAL_READER = -1
"""The client number of the reads after the last heal."""


def lost_writes(history: list[Op]) -> dict[str, int]:
    """Per key, the acknowledged writes the final read shows were lost.

    The final read returns the value some operation wrote (values are unique); every
    acknowledged write or swap that *began after that operation completed* should have
    replaced it, so each one is lost. (A lower bound, and the plain figure users ask
    for: any loss also makes the key not linearizable.) A final read of nothing loses
    every acknowledged write of the key."""
    final: dict[str, Op] = {}
    writes: dict[str, list[Op]] = {}
    for op in history:
        if op.outcome == "ok" and op.kind == "read" and op.client == FINAL_READER:
            final[op.key] = op
        elif op.kind == "write" or (op.kind == "cas" and op.outcome != "fail"):
            writes.setdefault(op.key, []).append(op)
    lost: dict[str, int] = {}
    for key, read in final.items():
        acked = [w for w in writes.get(key, [])
                 if w.outcome == "ok" and (w.kind == "write" or w.output)]
        if read.output is None:
            gone = len(acked)
        else:
            writer = next((w for w in writes.get(key, []) if w.value == read.output), None)
            after = writer.complete if writer is not None else None
            gone = 0 if after is None else sum(1 for w in acked if w.invoke > after)
        if gone:
            lost[key] = gone
    return lost


class RegisterWorkload:
    """Clients of ``slots`` registers at a time, each replaced after ``ops_per_key``."""

    def __init__(self, client: Node, *, slots: int, ops_per_key: int,
                 timeout_s: float = 2.0) -> None:
        self.client = client
        self.ops_per_key = ops_per_key
        self.timeout_s = timeout_s
        self.history: list[Op] = []
        self.errors: Counter[str] = Counter()
        self.keys = [f"reg-{slot}-0" for slot in range(slots)]
        self.used: list[str] = list(self.keys)
        self._generation = [0] * slots
        self._started: Counter[str] = Counter()
        self._last: dict[str, int | None] = {}
        self._values = itertools.count(1)
        self._t0 = time.monotonic()

    def _pick(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self.keys))
        key = self.keys[slot]
        self._started[key] += 1
        if self._started[key] >= self.ops_per_key:
            self._generation[slot] += 1
            self.keys[slot] = f"reg-{slot}-{self._generation[slot]}"
            self.used.append(self.keys[slot])
        return key

    async def operate(self, key: str, kind: OpKind, worker: int) -> Op:
        """One operation on ``key``, recorded with its interval and outcome."""
        ref = self.client.ref(ChaosRegister, key).options(timeout=self.timeout_s)
        value = next(self._values) if kind != "read" else None
        expected = self._last.get(key)
        invoke = time.monotonic() - self._t0
        try:
            if kind == "read":
                output: int | bool | None = await ref.read()
            elif kind == "write":
                assert value is not None
                await ref.write(value)
                output = None
            else:
                assert value is not None
                output = await ref.cas(expected, value)
        except PhoenixError as exc:
            self.errors[type(exc).__name__] += 1
            # A definite error ends the operation; an indefinite one never does.
            complete = time.monotonic() - self._t0 if exc.definite else None
            op = Op(key, kind, invoke, complete, "fail" if exc.definite else "info",
                    value=value, expected=expected if kind == "cas" else None,
                    client=worker)
        else:
            op = Op(key, kind, invoke, time.monotonic() - self._t0, "ok", value=value,
                    expected=expected if kind == "cas" else None, output=output,
                    client=worker)
            if kind == "read":
                self._last[key] = op.output if not isinstance(op.output, bool) else None
            elif kind == "write" or output:
                self._last[key] = value
        self.history.append(op)
        return op

    async def run_client(self, worker: int, rng: random.Random, stop: asyncio.Event) -> None:
        """One client: an operation at a time on a random key until ``stop``."""
        while not stop.is_set():
            key = self._pick(rng)
            op = await self.operate(key, rng.choices(_KINDS, _WEIGHTS)[0], worker)
            if op.outcome != "ok":
                await asyncio.sleep(0.02)

    async def read_all(self, deadline_s: float) -> list[str]:
        """Read every key ever used (retrying until it answers, up to ``deadline_s`` in
        all); the keys that never answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        unanswered = []
        for key in self.used:
            while (await self.operate(key, "read", FINAL_READER)).outcome != "ok":
                if loop.time() > deadline:
                    unanswered.append(key)
                    break
                await asyncio.sleep(0.1)
        return unanswered

    def counts(self) -> dict[str, int]:
        counts = Counter(op.outcome for op in self.history)
        return {name: counts[name] for name in ("ok", "fail", "info")}


async def run_register(*, seconds: float, seed: int, nodes: int = 3, keys: int = 4,
                       clients: int = 15, ops_per_key: int = 1_000,
                       faults: Sequence[str] = FAULTS,
                       pause_between_s: float = 2.0, data_dir: str | None = None,
                       max_steps: int = DEFAULT_MAX_STEPS,
                       say: Callable[[str], None] | None = None) -> RegisterReport:
    """Run the register workload for ``seconds`` under the nemesis (``faults``, see
    :data:`~phoenix_cluster.testing.chaos.FAULTS`), heal, read every key, check every
    key's history for linearizability; see the module docstring."""
    rng = random.Random(seed)
    tell = say if say is not None else _log.info
    node_args = ["--data-dir", data_dir] if data_dir is not None else []
    async with LocalCluster(nodes, CHAOS_IMPORTS, node_args=node_args,
                            startup_timeout_s=CHAOS_STARTUP_TIMEOUT_S) as cluster:
        client = await cluster.client(listen=None)
        workload = RegisterWorkload(client, slots=keys, ops_per_key=ops_per_key)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(workload.run_client(w, random.Random(rng.random()), stop))
                 for w in range(clients)]
        nemesis = Nemesis(cluster, client, random.Random(rng.random()), tell, faults)
        started = time.monotonic()
        try:
            await nemesis.run(seconds, pause_between_s,
                              lambda: f"operations so far: {workload.counts()}")
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await nemesis.revive()
        elapsed = time.monotonic() - started
        unanswered = await workload.read_all(30.0)
    tell(f"checking {len(workload.history):,} operations on {len(workload.used)} keys")
    checked = time.monotonic()
    results = check_history(workload.history, max_steps=max_steps)
    return RegisterReport(seed, nodes, elapsed, results, workload.counts(), nemesis.faults,
                          nemesis.unhealed, unanswered, lost_writes(workload.history),
                          dict(workload.errors), time.monotonic() - checked,
                          workload.history)
