"""One simulation run: the membership-and-ring layer at full scale, then whole node
stacks at a smaller scale, under one seed, one fault plan and one event trace."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import IO, Any

from .faults import FaultPlan, TraceRecorder
from .membership import MembershipRun, simulate_membership
from .stack import StackRun, simulate_stack

__all__ = ["SimulationReport", "replay_command", "simulate"]


@dataclass(slots=True)
class SimulationReport:
    """Everything one run measured and checked (``phx simulate --json`` prints
    :meth:`as_dict`)."""

    seed: int
    nodes: int
    stack_nodes: int
    plan: FaultPlan
    membership: MembershipRun
    stack: StackRun | None
    trace_sha256: str
    trace_events: int
    wall_seconds: float
    membership_wall_seconds: float
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def converged(self) -> bool:
        return self.membership.converged and (
            self.stack is None or self.stack.settle_rounds is not None)

    def as_dict(self) -> dict[str, Any]:
        stack = self.stack
        sim_seconds = self.membership.sim_seconds + (stack.sim_seconds if stack else 0.0)
        stack_wall = self.wall_seconds - self.membership_wall_seconds
        return {
            "ok": self.ok,
            "failures": self.failures,
            "seed": self.seed,
            "nodes": self.nodes,
            "faults": str(self.plan),
            "layers": {
                "membership": self.nodes, "ring": self.nodes,
                "placement": self.stack_nodes, "replication": self.stack_nodes,
                "agents": self.stack_nodes,
            },
            "converged": self.converged,
            "convergence_rounds": self.membership.convergence_rounds,
            "join_rounds": self.membership.join_rounds,
            "crash_rounds": self.membership.crash_rounds,
            "gossip_messages_per_node_per_round": self.membership.gossip_per_node_round,
            "duplicate_activations": stack.duplicate_activations if stack else 0,
            "lost_acked_writes": stack.lost_acked_writes if stack else 0,
            "duplicate_writes": stack.duplicate_writes if stack else 0,
            "trace_sha256": self.trace_sha256,
            "trace_events": self.trace_events,
            "sim_seconds": round(sim_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "sim_seconds_per_wall_second": _ratio(sim_seconds, self.wall_seconds),
            "membership": {**self.membership.as_dict(), "sim_seconds_per_wall_second":
                           _ratio(self.membership.sim_seconds, self.membership_wall_seconds)},
            "stack": None if stack is None else {
                **stack.as_dict(),
                "sim_seconds_per_wall_second": _ratio(stack.sim_seconds, stack_wall)},
            "replay": replay_command(self.nodes, self.stack_nodes, self.seed, self.plan),
        }


def _ratio(sim: float, wall: float) -> float:
    return round(sim / wall, 2) if wall > 0 else 0.0


def replay_command(nodes: int, stack_nodes: int, seed: int, plan: FaultPlan) -> str:
    """The one-line command that runs the same simulation again."""
    return (f"phx simulate --nodes {nodes} --stack-nodes {stack_nodes} --seed {seed}"
            f" --faults {shlex.quote(str(plan))}")


def simulate(nodes: int, seed: int, plan: FaultPlan, *, stack_nodes: int = 0,
             trace_out: IO[str] | None = None) -> SimulationReport:
    """Run one simulation (both layers; the stack layer only when ``stack_nodes``).

    Deterministic: the same arguments give the same report, wall times aside, and the
    same :attr:`SimulationReport.trace_sha256`.

    Raises:
        ValueError: ``nodes`` below 3, or ``stack_nodes`` between 1 and 2.
    """
    if stack_nodes and stack_nodes < 3:
        raise ValueError(f"stack_nodes must be 0 or at least 3, got {stack_nodes}")
    trace = TraceRecorder(trace_out)
    started = time.perf_counter()
    membership = simulate_membership(nodes, seed, plan, trace)
    membership_wall = time.perf_counter() - started
    stack = simulate_stack(stack_nodes, seed, plan, trace) if stack_nodes else None
    report = SimulationReport(
        seed=seed, nodes=nodes, stack_nodes=stack_nodes, plan=plan, membership=membership,
        stack=stack, trace_sha256=trace.sha256, trace_events=trace.events,
        wall_seconds=time.perf_counter() - started, membership_wall_seconds=membership_wall)
    report.failures = _failures(report)
    return report


def _failures(report: SimulationReport) -> list[str]:
    out = []
    m, s = report.membership, report.stack
    for phase, rounds in (("join", m.join_rounds), ("crash", m.crash_rounds),
                          ("heal", m.convergence_rounds)):
        if rounds is None:
            out.append(f"membership did not converge after the {phase}")
    if s is not None:
        for after in s.unsettled:
            out.append(f"the node stacks did not settle after {after}")
        if s.lost_acked_writes:
            out.append(f"{s.lost_acked_writes} acknowledged writes lost")
        if s.duplicate_writes:
            out.append(f"{s.duplicate_writes} writes applied twice")
        if s.untyped_errors:
            out.append(f"{s.untyped_errors} calls failed with an untyped error")
        if s.unreadable_ledgers:
            out.append(f"{s.unreadable_ledgers} ledgers never answered after the faults")
        if s.duplicate_activations:
            out.append(f"{s.duplicate_activations} duplicate activations")
        if not s.acknowledged:
            out.append("the workload got no write acknowledged")
    return out
