"""The workload of the full-stack simulation: ledgers that append operation ids.

Each ledger (an agent) appends the id of every operation it runs, with the activation
that ran it. A run checks, once the cluster has healed:

- every acknowledged operation is in its ledger (``lost_acked_writes``);
- no operation is in a ledger twice (``duplicate_writes``: a resend that ran again);
- no two activations of one ledger both wrote while the other was live
  (``duplicate_activations``): in the committed history, once a newer activation has
  written, an older one never writes again; and at the end no ledger is active on two
  running nodes.

An activation is named ``<node>@<incarnation>/<n>``, ``n`` counting this node's
activations: deterministic, so the trace stays byte-identical from run to run.
"""

from __future__ import annotations

from typing import Any

from ..._agents.agent import Agent

__all__ = ["Ledger", "history_violations", "reset_lives"]

_LIVES: dict[str, int] = {}


def reset_lives() -> None:
    """Start counting activations from zero (each run does, so runs compare)."""
    _LIVES.clear()


class Ledger(Agent, kind="phx.simulation.ledger"):
    """An append-only list of operation ids, with the activation that appended each."""

    def __init__(self) -> None:
        self.writes: list[list[Any]] = []  # [operation id, activation]

    async def on_activate(self) -> None:
        node = self.node
        host = f"{node.name}@{node.incarnation}"
        _LIVES[host] = _LIVES.get(host, 0) + 1
        self._life = f"{host}/{_LIVES[host]}"

    async def append(self, op: int) -> int:
        self.writes.append([op, self._life])
        return len(self.writes)

    async def read(self) -> list[list[Any]]:
        return self.writes


def history_violations(writes: list[list[Any]]) -> int:
    """How many writes came from an activation older than one that already wrote."""
    retired: set[str] = set()
    current: str | None = None
    violations = 0
    for _, life in writes:
        if life == current:
            continue
        if life in retired:
            violations += 1
            continue
        if current is not None:
            retired.add(current)
        current = life
    return violations
