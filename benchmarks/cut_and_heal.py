"""Cut one node for its suspicion time plus a second, heal, again and again: nobody may be
downed, and no call may fail for longer than the cut.

Reachability is not downing (docs/design/splitbrain.md): failure detection only marks a
member unreachable, and only a split-brain decision, on a view stable for
``stable_after``, downs anyone. A cut healed before that decision must leave every node
running. Each trial, on one ``LocalCluster`` of real node processes with the default
settings:

1. node ``trial % nodes`` is isolated (iptables: no packet to or from it);
2. the cut lasts until every other node has declared it dead, plus one second;
3. the cut is healed, and the trial ends once every key answers again.

Meanwhile one writer per key adds 1 to it, one call after another (``timeout`` 1 s). The
figures: nodes downed and split-brain decisions (must be 0), the cut's length, how long
after the heal every key answered again, each key's longest run of failing calls against
the cut it fell in, the calls sent after a heal that failed anyway (a run of failures
outlasts its cut by up to a call's timeout even when none did), and acknowledged adds
lost (read back at the end: every counter must hold at least its acknowledged adds and
at most those plus its calls of unknown outcome).

Needs root and iptables. Run:
``PYTHONPATH=src python benchmarks/cut_and_heal.py [--trials 100] [--keys 30] [--json F]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, wait_until

CALL_TIMEOUT_S = 1.0
DEAD = "membership {observer}: {name} is dead"
DECISION = "split-brain decision at "


class CutCounter(phx.Agent, kind="bench.cut_counter", idle_timeout=3600):
    """A counter: what the writers add to and the verdict reads back."""

    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def read(self) -> int:
        return self.total


@dataclass
class Writer:
    """Adds 1 to one key, call after call; remembers its outcomes and failing runs."""

    ref: phx.AgentRef
    acked: int = 0
    unknown: int = 0
    failed: int = 0
    failing_since: float | None = None
    last_error: str = ""
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) failing
    failures: list[tuple[float, str]] = field(default_factory=list)  # (call sent, error)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                await self.ref.add(1)
            except phx.PhoenixError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.failures.append((sent, self.last_error))
                if exc.definite:
                    self.failed += 1
                else:
                    self.unknown += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                await asyncio.sleep(0.05)
                continue
            self.acked += 1
            if self.failing_since is not None:
                self.runs.append((self.failing_since, time.monotonic()))
                self.failing_since = None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


def _count(cluster: LocalCluster, text: str) -> int:
    return sum(node.log().count(text) for node in cluster.nodes)


def _declared_dead(cluster: LocalCluster, victim: int, before: dict[int, int]) -> bool:
    name = cluster.nodes[victim].name
    return all(
        cluster.nodes[i].log().count(DEAD.format(observer=cluster.nodes[i].name, name=name))
        > before[i]
        for i in range(len(cluster.nodes)) if i != victim)


async def _trial(cluster: LocalCluster, writers: list[Writer], victim: int,
                 quiet_s: float = 8.0) -> dict[str, float]:
    name = cluster.nodes[victim].name
    before = {i: cluster.nodes[i].log().count(DEAD.format(observer=cluster.nodes[i].name,
                                                          name=name))
              for i in range(len(cluster.nodes))}
    started = time.monotonic()
    cluster.isolate(victim)
    try:
        try:
            # Every 50 ms: the condition reads the logs, and this process is also the
            # client whose calls are measured.
            await wait_until(lambda: _declared_dead(cluster, victim, before), timeout=60,
                             what=f"the others to declare {name} dead", every=0.05)
        except TimeoutError:
            _print_tails(cluster)
            raise
        detected = time.monotonic()
        await asyncio.sleep(1.0)
    finally:
        cluster.heal()
    healed = time.monotonic()
    try:
        await wait_until(lambda: not any(w.failing for w in writers), timeout=5,
                         what="every key to answer again after the heal")
    except TimeoutError:
        # Slow: say which keys still fail and why, then keep waiting.
        for w in writers:
            if w.failing:
                print(f"  {w.ref.key} still failing 5 s after the heal: {w.last_error}",
                      file=sys.stderr, flush=True)
        await wait_until(lambda: not any(w.failing for w in writers), timeout=120,
                         what="every key to answer again after the heal")
    answered = time.monotonic()
    # Let the refuted suspicions settle before the next cut: the views agree, and no
    # node has logged a suspicion or a death for ``quiet_s`` (each trial starts from a
    # settled cluster, as the scenario assumes).
    await cluster.wait_converged(timeout_s=60)
    await _quiet(cluster, quiet_s)
    return {"victim": victim, "detection_s": detected - started, "cut_s": healed - started,
            "answered_after_heal_s": answered - healed, "started": started, "healed": healed}


_UNREST = (" is suspected by ", " is dead")


async def _quiet(cluster: LocalCluster, quiet_s: float, limit_s: float = 60.0) -> None:
    def unrest() -> int:
        return sum(node.log().count(word) for node in cluster.nodes for word in _UNREST)

    give_up = time.monotonic() + limit_s
    seen, since = unrest(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > give_up:
            raise TimeoutError(f"membership still restless {limit_s:.0f} s after a heal")
        await asyncio.sleep(0.5)
        if (now := unrest()) != seen:
            seen, since = now, time.monotonic()


def _print_tails(cluster: LocalCluster, lines: int = 40) -> None:
    for node in cluster.nodes:
        tail = "\n    ".join(node.log().splitlines()[-lines:])
        print(f"  {node.name} (running: {node.running}):\n    {tail}", file=sys.stderr,
              flush=True)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3)}


async def main(trials: int, nodes: int, keys: int, quiet_s: float = 8.0) -> dict[str, object]:
    if (why := LocalCluster.network_faults_unavailable()) is not None:
        raise SystemExit(f"cut_and_heal: {why}")
    async with LocalCluster(nodes, ["cut_and_heal"]) as cluster:
        client = await cluster.client()
        writers = [Writer(client.ref(CutCounter, f"cut-{i}").options(timeout=CALL_TIMEOUT_S))
                   for i in range(keys)]
        stop = asyncio.Event()
        results: list[dict[str, float]] = []
        async with asyncio.TaskGroup() as group:
            for w in writers:
                group.create_task(w.run(stop))
            try:
                for n in range(trials):
                    try:
                        results.append(await _trial(cluster, writers, n % nodes, quiet_s))
                    except Exception:
                        _print_tails(cluster)
                        raise
                    print(f"trial {n + 1}/{trials}: cut {results[-1]['cut_s']:.2f} s, every "
                          f"key answered {results[-1]['answered_after_heal_s']:.2f} s after "
                          "the heal", file=sys.stderr, flush=True)
            finally:
                stop.set()
        exited = [node.name for node in cluster.nodes if not node.running]
        decisions = _count(cluster, DECISION)
        totals = [await w.ref.read() for w in writers]

    # Each failing run against the cut it overlaps: how much longer than the cut it lasted.
    beyond: list[float] = []
    for w in writers:
        for start, end in w.runs:
            cut = next((r for r in results if r["started"] - 2 <= start <= r["healed"]), None)
            beyond.append(end - start - (cut["cut_s"] if cut else 0.0))
    # A run of failures outlasts its cut by up to a call's timeout even when every call
    # sent after the heal succeeds (the last one sent before it times out after it), so
    # count those directly: calls sent after a heal (before the next cut) that failed.
    after_heal: list[str] = []
    for w in writers:
        for sent, error in w.failures:
            if any(r["healed"] < sent and (nxt is None or sent < nxt["started"])
                   for r, nxt in zip(results, [*results[1:], None], strict=True)):
                after_heal.append(error)
    lost = sum(max(0, w.acked - total) for w, total in zip(writers, totals, strict=True))
    phantom = sum(max(0, total - w.acked - w.unknown)
                  for w, total in zip(writers, totals, strict=True))
    return {
        "trials": trials, "nodes": nodes, "keys": keys, "quiet_s": quiet_s,
        "nodes_downed": len(exited), "split_brain_decisions": decisions,
        "detection": _stats([r["detection_s"] for r in results]),
        "cut": _stats([r["cut_s"] for r in results]),
        "answered_after_heal": _stats([r["answered_after_heal_s"] for r in results]),
        "failing_runs": len(beyond),
        "failing_runs_longer_than_their_cut": sum(1 for b in beyond if b > 0),
        "longest_beyond_cut_s": round(max(beyond, default=0.0), 3),
        "calls_sent_after_a_heal_that_failed": len(after_heal),
        "their_errors": sorted(set(e.split(" (request")[0][:160] for e in after_heal))[:10],
        "calls_acknowledged": sum(w.acked for w in writers),
        "calls_failed_definite": sum(w.failed for w in writers),
        "calls_unknown_outcome": sum(w.unknown for w in writers),
        "acknowledged_adds_lost": lost, "adds_beyond_acknowledged_and_unknown": phantom,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--quiet-s", type=float, default=8.0,
                        help="before the next cut, wait until no node logged a suspicion "
                             "or a death for this long (0: cuts back to back, once the "
                             "views agree)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    report = asyncio.run(main(args.trials, args.nodes, args.keys, args.quiet_s))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    clean = (report["nodes_downed"] == 0 and report["split_brain_decisions"] == 0
             and report["acknowledged_adds_lost"] == 0)
    sys.exit(0 if clean else 1)
