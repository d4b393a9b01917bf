"""Graceful termination: how long a node takes from SIGTERM to exit 0, handing off its
agents (p50 / p95 over a few trials, for a few agent counts).

On SIGTERM a ``phx node`` stops taking new activations, hands its partitions' leadership
to their next primaries, moves every agent it holds to its new home (state included),
leaves the membership and exits 0 (docs/operations.md). Each trial, on one
``LocalCluster`` of 3 real node processes with the default settings:

1. ``agents`` agents of a quorum-replicated kind are activated with one call each,
   spread over the cluster by their keys (about a third live on node 0);
2. node 0 gets SIGTERM; the figure is the time until its process exited (and its exit
   code, which must be 0), with the node's own account from its log: partitions
   handed over, agents handed off and the seconds it took;
3. every key is called again: each must answer with the state it had (none lost), and
   node 0 is restarted for the next trial.

Run: ``PYTHONPATH=src python benchmarks/termination.py [--trials 5] [--agents 300 3000]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster

HANDED_OVER = re.compile(r"handed over (\d+) partitions in ([\d.]+)s")
HANDED_OFF = re.compile(r"handed off (\d+) agents before leaving \(([\d.]+)s")


class Parcel(phx.Agent, kind="bench.parcel", idle_timeout=3600):
    """An agent with a little state: the value it was given."""

    def __init__(self) -> None:
        self.value = -1

    async def put(self, value: int) -> int:
        self.value = value
        return value

    async def get(self) -> int:
        return self.value


async def _call_all(client: phx.Node, keys: list[str], method: str) -> list[int]:
    gate = asyncio.Semaphore(64)

    async def one(i: int, key: str) -> int:
        async with gate:
            ref = client.ref(Parcel, key).options(timeout=30)
            return int(await (ref.put(i) if method == "put" else ref.get()))

    return await asyncio.gather(*(one(i, k) for i, k in enumerate(keys)))


async def _trial(cluster: LocalCluster, client: phx.Node, agents: int,
                 trial: int) -> dict[str, float]:
    keys = [f"t{trial}-{agents}-{i}" for i in range(agents)]
    await _call_all(client, keys, "put")
    node = cluster.nodes[0]
    log_before = len(node.log())
    started = time.monotonic()
    code = await cluster.stop(0, timeout_s=120)
    exited = time.monotonic() - started
    log = node.log()[log_before:]
    over = HANDED_OVER.search(log)
    off = HANDED_OFF.search(log)
    values = await _call_all(client, keys, "get")
    lost = sum(1 for i, v in enumerate(values) if v != i)
    await cluster.start_node(0)
    await cluster.wait_converged(timeout_s=60)
    return {
        "exit_code": code, "sigterm_to_exit_s": exited,
        "partitions_handed_over": int(over.group(1)) if over else -1,
        "hand_over_s": float(over.group(2)) if over else -1.0,
        "agents_handed_off": int(off.group(1)) if off else -1,
        "hand_off_s": float(off.group(2)) if off else -1.0,
        "agents_lost": lost,
    }


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3)}


async def main(trials: int, counts: list[int]) -> dict[str, object]:
    report: dict[str, object] = {"trials": trials, "nodes": 3}
    async with LocalCluster(3, ["termination"]) as cluster:
        client = await cluster.client()
        for agents in counts:
            runs = []
            for trial in range(trials):
                runs.append(await _trial(cluster, client, agents, trial))
                print(f"{agents} agents, trial {trial + 1}/{trials}: exit "
                      f"{runs[-1]['exit_code']} after {runs[-1]['sigterm_to_exit_s']:.2f} s, "
                      f"{runs[-1]['agents_handed_off']} agents handed off",
                      file=sys.stderr, flush=True)
            report[str(agents)] = {
                "sigterm_to_exit": _stats([r["sigterm_to_exit_s"] for r in runs]),
                "hand_off": _stats([r["hand_off_s"] for r in runs]),
                "hand_over": _stats([r["hand_over_s"] for r in runs]),
                "agents_handed_off_p50": statistics.median(r["agents_handed_off"] for r in runs),
                "exit_codes": sorted({int(r["exit_code"]) for r in runs}),
                "agents_lost": sum(int(r["agents_lost"]) for r in runs),
            }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--agents", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    result = asyncio.run(main(args.trials, args.agents))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    clean = all(isinstance(v, dict) and v["exit_codes"] == [0] and v["agents_lost"] == 0
                for k, v in result.items() if k.isdigit())
    sys.exit(0 if clean else 1)
