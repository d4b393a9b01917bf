"""Rollback cost: what the agent runtime spends on an agent's state per message, for a
handler that changes one field, with an empty state and with 100,000 items, before and
after state tracking (``src/phoenix_cluster/_agents/tracking.py``), in one run.

"Before" is the plain path every kind took until tracking landed, and that a kind with
its own ``snapshot``/``restore`` still takes: encode the whole state after each message
(the rollback point and what a replicated kind commits), decode it on a rollback. Here a
kind whose ``snapshot``/``restore`` only call the default ones. "After" is the default
kind. Series, each on an embedded node (no replicas):

- ``empty``: one integer of state;
- ``dict 100k``: that integer plus a dict of 100,000 integers (tracked: watched dict);
- ``list 100k``: that integer plus a list of 100,000 integers (tracked: watched list).

Figures per series (the rounds alternate the series; p50 / p95 over every sample):

- **state per message**: time in ``StateStore.settle`` + ``StateStore.accept`` for a
  message that succeeded (settling what changed and making it the committed state);
- **commit bytes**: time to produce the whole state's bytes a replicated kind ships
  (``Activation.committed``: the plain path has them already, a tracker joins its
  parts; on a replicated kind it is paid per message that changed something);
- **rollback**: time in ``StateStore.rollback`` for a message that changed the field
  and raised;
- **call**: a whole local call (``await ref.bump()``), for scale.

Series with one item changed instead of ``count``: ``dict 100k item`` (``items[k] = v``),
``list 100k item`` (``items[i] = v``) and ``list 100k append`` (``items.append(v)``).

Run: ``PYTHONPATH=src python benchmarks/rollback_cost.py [--calls 400] [--rounds 5]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

import phoenix_cluster as phx
from phoenix_cluster._agents.state import StateStore

ITEMS = 100_000

_samples: dict[str, list[float]] = {}
_series = [""]


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _samples.setdefault(f"{_series[0]}|{name}", []).append(time.perf_counter() - started)
    return wrapper


class _Base(phx.Agent, kind="bench.rollback.base"):
    def __init__(self) -> None:
        self.count = 0
        shape = self.key.split("-")[0]
        if shape == "dict":
            self.items: Any = {i: i for i in range(ITEMS)}
        elif shape == "list":
            self.items = list(range(ITEMS))

    def bump(self) -> int:
        self.count += 1
        return self.count

    def item(self) -> int:
        self.count += 1
        self.items[self.count % ITEMS] = -self.count
        return self.count

    def append(self) -> int:
        self.count += 1
        self.items.append(self.count)
        return self.count

    def fail(self, method: str) -> None:
        getattr(self, method)()
        raise ValueError("refused")


class Tracked(_Base, kind="bench.rollback.tracked"):
    """The default kind (after)."""


class Plain(_Base, kind="bench.rollback.plain"):
    """The plain path (before): its own snapshot/restore, which only call the defaults."""

    def snapshot(self) -> Any:
        return super().snapshot()

    def restore(self, state: Any) -> None:
        super().restore(state)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(calls: int, rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    StateStore.settle = _timed("settle", StateStore.settle)  # type: ignore[method-assign]
    StateStore.accept = _timed("accept", StateStore.accept)  # type: ignore[method-assign]
    StateStore.rollback = _timed("rollback", StateStore.rollback)  # type: ignore[method-assign]
    commit_bytes = _timed("encoded", lambda act: act.committed)  # a tracker joins its parts
    shapes = [("empty", "bump"), ("dict", "bump"), ("list", "bump"), ("dict", "item"),
              ("list", "item"), ("list", "append")]
    series = [(f"{label} {shape}{'' if method == 'bump' else ' ' + method}", kind,
               f"{shape}-{method}", method)
              for shape, method in shapes
              for label, kind in (("before", Plain), ("after", Tracked))]
    async with phx.Node() as node:
        refs = {name: node.ref(kind, key) for name, kind, key, _ in series}
        _series[0] = "warm-up"
        for ref in refs.values():  # activate, and a first commit (tracking starts)
            await ref.bump()
        for _ in range(rounds):
            for name, kind, key, method in series:
                ref = refs[name]
                act = node._runtime.activation(kind._phx_spec, key)
                assert act is not None
                gc.collect()
                _series[0] = name
                for _ in range(calls):
                    started = time.perf_counter()
                    await getattr(ref, method)()
                    _samples.setdefault(f"{name}|call", []).append(
                        time.perf_counter() - started)
                for _ in range(calls):  # (apart: a 700 KB copy leaves the caches cold)
                    commit_bytes(act)
                for _ in range(max(1, calls // 10)):
                    with contextlib.suppress(phx.AgentError):
                        await ref.fail(method)
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for name, kind, key, _ in series:
            act = node._runtime.activation(kind._phx_spec, key)
            assert act is not None
            per_message = [s + a for s, a in zip(_samples[f"{name}|settle"],
                                                 _samples[f"{name}|accept"], strict=False)]
            row = {"state per message": per_message,
                   "commit bytes": _samples[f"{name}|encoded"],
                   "rollback": _samples[f"{name}|rollback"],
                   "call": _samples[f"{name}|call"]}
            out[name] = {k: (_pct(v, 0.5) * 1e6, _pct(v, 0.95) * 1e6) for k, v in row.items()}
            out[name]["tracked"] = (float(act.tracker is not None), float(len(act.committed)))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per series per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(_run(args.calls, args.rounds))
    print(f"{'series':<21} {'tracked':>7} {'state B':>9} | p50 / p95 µs: "
          f"{'state per message':>18} {'commit bytes':>14} {'rollback':>16} {'call':>14}")
    for name, row in result.items():
        tracked, size = row.pop("tracked")
        cells = "  ".join(f"{p50:>8,.1f} / {p95:<8,.1f}" for p50, p95 in row.values())
        print(f"{name:<21} {'yes' if tracked else 'no':>7} {int(size):>9,} | {cells}")


if __name__ == "__main__":
    main()
