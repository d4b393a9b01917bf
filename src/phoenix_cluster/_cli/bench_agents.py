"""The agent kinds ``phx bench cluster`` measures, hosted by its node processes.

The node processes import this module (``phx node --import
phoenix_cluster._cli.bench_agents``) so they can host :class:`BenchTarget` and
:class:`BenchRelay`; the bench process imports it too, to address them.

Importing it also applies one benchmark-only switch: with ``PHX_BENCH_NODE_LOOP=asyncio``
in the environment, ``uvloop`` is made unimportable in this process, so a ``phx node``
that imported this module runs on the stdlib loop (``phx node`` picks uvloop whenever it
can import it, after importing its ``--import`` modules). ``phx bench cluster --loop
asyncio`` sets it for its nodes; nothing else does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import sys
import time
from typing import cast

import msgspec

from .. import crdt
from .._agents.agent import Agent

__all__ = [
    "NODE_LOOP_ENV",
    "BenchAsync",
    "BenchBlob",
    "BenchQuorum",
    "BenchRelay",
    "BenchTarget",
    "BenchVolatile",
    "loop_description",
]

NODE_LOOP_ENV = "PHX_BENCH_NODE_LOOP"
"""Set to ``asyncio`` to keep a node process that imports this module off uvloop."""

if os.environ.get(NODE_LOOP_ENV) == "asyncio":
    # ``import uvloop`` raises ImportError from now on, so the node falls back to asyncio.
    sys.modules["uvloop"] = None  # type: ignore[assignment]


def loop_description() -> str:
    """The running event loop, as the benchmark reports it: ``uvloop 0.23.0`` or ``asyncio``."""
    module = type(asyncio.get_running_loop()).__module__
    if module.startswith("uvloop"):
        return f"uvloop {importlib.metadata.version('uvloop')}"
    return "asyncio"


class BenchTarget(Agent, kind="bench.cluster.target"):
    """The measured agent: one small integer of state, at the default mailbox limit
    (remote casts are acknowledged once queued; a full mailbox makes them wait)."""

    def __init__(self) -> None:
        self.count = 0

    async def inc(self, by: int = 1) -> int:
        self.count += by
        return self.count

    async def touch(self) -> None:
        self.count += 1

    async def get(self) -> int:
        return self.count

    async def where(self) -> dict[str, str]:
        """The hosting node's name and the event loop it runs on."""
        return {"node": str(self.node.name), "loop": loop_description()}


class BenchRelay(Agent, kind="bench.cluster.relay"):
    """Measures member-to-member calls from inside a member node.

    ``measure`` runs on the relay's node and calls a :class:`BenchTarget` (which the
    caller picked on another member) sequentially, timing each call there.
    """

    def __init__(self) -> None:
        self.runs = 0

    async def where(self) -> dict[str, str]:
        return {"node": str(self.node.name), "loop": loop_description()}

    async def measure(self, target_key: str, warmup: int, calls: int) -> list[int]:
        """Time ``calls`` sequential calls to ``target_key`` after ``warmup`` untimed ones.

        Returns:
            One duration per timed call, in nanoseconds.
        """
        inc = self.node.ref(BenchTarget, target_key).inc
        for _ in range(warmup):
            await inc(1)
        clock = time.perf_counter_ns
        samples: list[int] = []
        append = samples.append
        for _ in range(calls):
            started = clock()
            await inc(1)
            append(clock() - started)
        self.runs += 1
        return samples


class BenchAccount(Agent, kind="bench.cluster.account"):
    """An agent with some state to move: ``phx bench agents`` migrates these."""

    def __init__(self) -> None:
        self.entries: list[int] = []

    async def fill(self, count: int) -> int:
        self.entries.extend(range(count))
        return len(self.entries)

    async def size(self) -> int:
        return len(self.entries)

    async def where(self) -> str:
        return str(self.node.name)


class _Tally:
    """The state and messages of ``phx bench replication``'s counters (one per durability)."""

    def __init__(self) -> None:
        self.count = 0

    async def inc(self, by: int = 1) -> int:
        self.count += by
        return self.count

    async def get(self) -> int:
        return self.count

    async def where(self) -> str:
        return str(cast(Agent, self).node.name)


class BenchQuorum(_Tally, Agent, kind="bench.replication.quorum", mailbox_limit=1 << 30):
    """A counter whose every change is committed to a majority of 3 replicas before the reply."""


class BenchAsync(_Tally, Agent, kind="bench.replication.async", durability="async",
                 mailbox_limit=1 << 30):
    """A counter that replies first and replicates after (may lose its last writes)."""


class BenchVolatile(_Tally, Agent, kind="bench.replication.none", durability="none",
                    mailbox_limit=1 << 30):
    """A counter kept in its host's memory only: the baseline without replication."""


class BenchCrdt(Agent, kind="bench.replication.crdt", consistency="crdt",
                mailbox_limit=1 << 30):
    """An active-active counter (a GCounter): merged into its replicas, not fenced."""

    count: crdt.GCounter

    def __init__(self) -> None:
        self.count = crdt.GCounter()

    async def inc(self, by: int = 1) -> int:
        self.count.increment(by, replica=self.replica)
        return self.count.value

    async def get(self) -> int:
        return self.count.value


class BenchBlob(Agent, kind="bench.replication.blob"):
    """An agent holding ``size`` bytes of state: ``phx bench replication`` migrates these."""

    def __init__(self) -> None:
        self.data = b""

    async def fill(self, size: int) -> int:
        self.data = bytes(size)
        return len(self.data)

    async def state(self) -> bytes:
        """The agent's state as the runtime encodes it (what a handoff carries)."""
        return msgspec.msgpack.encode(self.snapshot())

    async def where(self) -> str:
        return str(self.node.name)
