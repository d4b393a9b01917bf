"""Rolling restarts under load: the operation every deploy performs, checked for loss.

Clients add numbered items to :class:`ChaosCounter` agents on a :class:`LocalCluster`
while each node in turn gets SIGTERM (a graceful leave), is started again at once under
the same name and address, and the next node is touched as soon as the restarted one
printed READY (which a StatefulSet rolling update waits for). After the last roll the
checks of :func:`~phoenix_cluster.testing.chaos.check` run: every acknowledged add
present exactly once, no definitely failed add present, every key answering.

Used by ``tests/cluster/test_rolling_restart.py`` and ``phx bench roll``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._local_cluster import LocalCluster
from .chaos import CHAOS_IMPORTS, CHAOS_STARTUP_TIMEOUT_S, History, start_writers, verdict

__all__ = ["RollReport", "run_rolls"]

_log = logging.getLogger("phoenix_cluster.roll")


@dataclass
class RollReport:
    """The outcome of ``rolls`` rolling restarts of a cluster under load."""

    nodes: int
    rolls: int
    durable: bool
    counts: dict[str, int]
    """Operations by outcome: ``ok`` (acknowledged), ``unknown``, ``failed``."""
    lost: int
    """Acknowledged adds missing at the end (must be 0)."""
    violations: list[str]
    roll_seconds: list[float] = field(default_factory=list)
    """Wall time of each roll (every node stopped and back READY)."""
    failed_during_rolls: int = 0
    """Calls that failed (definite or not) while a roll was under way."""
    app_version: str = ""
    """With ``upgrade``: the application version every node runs at the end."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed calls by error type."""

    @property
    def ok(self) -> bool:
        return not self.violations


async def run_rolls(*, nodes: int = 3, rolls: int = 1, keys: int = 50, workers: int = 8,
                    durable: bool = False, seed: int = 0, log_dir: str | None = None,
                    upgrade: bool = False,
                    say: Callable[[str], None] | None = None) -> RollReport:
    """Roll ``nodes`` nodes ``rolls`` times under a write load and check for loss.

    With ``durable`` every node keeps its replicas in a ``--data-dir`` (a temporary
    directory removed afterwards), as a StatefulSet with volumes would. With ``log_dir``
    the nodes' logs are copied there at the end. With ``upgrade`` every roll is a rolling
    upgrade: the nodes start at ``--app-version 1.0`` and roll ``r`` restarts each at
    ``r + 2``.0, so agents move to the newest members as the roll goes.
    """
    tell = say if say is not None else _log.info
    rng = random.Random(seed)
    names = [f"roll-{i}" for i in range(keys)]
    history = History()
    with tempfile.TemporaryDirectory(prefix="phx-roll-") as data_dir:
        node_args = ["--data-dir", data_dir] if durable else []
        version = "1.0" if upgrade else ""
        if upgrade:
            node_args += ["--app-version", version]
        async with LocalCluster(nodes, CHAOS_IMPORTS, node_args=node_args,
                                startup_timeout_s=CHAOS_STARTUP_TIMEOUT_S) as cluster:
            client = await cluster.client(listen=None)
            stop = asyncio.Event()
            tasks = start_writers(client, names, history, stop, rng, workers)
            durations: list[float] = []
            failed_before = _failures(history)
            try:
                await asyncio.sleep(1.0)  # the load is running before the first leave
                for roll in range(rolls):
                    started = time.monotonic()
                    if upgrade:
                        version = f"{roll + 2}.0"
                    for node in cluster.nodes:
                        code = await cluster.stop(node.index, timeout_s=60.0)
                        if code != 0:
                            raise RuntimeError(f"{node.name} exited {code} on SIGTERM:\n"
                                               f"{node.log()[-3000:]}")
                        if upgrade:
                            node.extra_args = ["--app-version", version]
                        await cluster.start_node(node.index)
                    durations.append(time.monotonic() - started)
                    tell(f"roll {roll + 1}/{rolls}: {durations[-1]:.1f} s, "
                         f"operations so far {history.counts()}")
                await asyncio.sleep(1.0)  # and keeps running after the last
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            failed_during = _failures(history) - failed_before
            await cluster.wait_converged(timeout_s=30.0)
            judged = await verdict(client, names, history)
            if log_dir is not None:
                for node in cluster.nodes:
                    shutil.copy(node.log_path, f"{log_dir}/{node.name}.log")
    return RollReport(nodes, rolls, durable, history.counts(), judged.lost,
                      judged.violations, durations, failed_during, version,
                      dict(history.errors))


def _failures(history: History) -> int:
    counts = history.counts()
    return counts["unknown"] + counts["failed"]
