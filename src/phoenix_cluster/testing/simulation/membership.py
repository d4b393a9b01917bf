"""Membership and the ring at full scale: every member's SWIM state machine and its
view of the ring, one process, one seed.

The members are the real :class:`~phoenix_cluster._membership.swim.SwimProtocol`
instances a node runs, on :class:`~phoenix_cluster._membership.simulation.SimulatedNetwork`
(lossy, duplicating, reordering, partitionable datagrams; push-pulls; a clock that jumps
from one event to the next). A member's ring is a pure function of the members it sees
alive, so "every member has the same ring" is "every member sees the same live set",
which is what the phases wait for; the ring and the partition table are then built once
from that set to count the partitions a join and a crash move.

The phases, each measured in protocol periods ("rounds"):

1. ``join``: a member joins a settled cluster; until every member sees it alive;
2. ``crash``: a member crashes; until every member sees it dead;
3. ``faults``: the plan's partition, pauses and crashes for :data:`FAULT_WINDOW_S`,
   then everything heals (crashed members restart); until every running member sees
   exactly the running members alive (``convergence_rounds``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from ..._membership.simulation import SimulatedNetwork
from ..._membership.swim import SwimSettings
from ..._ring.partitions import PartitionTable
from ..._ring.ring import HashRing
from .faults import FaultPlan, TraceRecorder

__all__ = ["FAULT_WINDOW_S", "MembershipRun", "simulate_membership"]

FAULT_WINDOW_S = 30.0
"""How long the faults phase strikes before everything heals."""

_PHASE_LIMIT_ROUNDS = 300.0


@dataclass(slots=True)
class MembershipRun:
    """What the membership-and-ring layer of one run measured.

    Attributes:
        nodes: members at the start.
        join_rounds, crash_rounds, convergence_rounds: rounds each phase took to
            converge (``None``: not within the limit).
        gossip_per_node_round: datagrams sent per member per round, over the run.
        gossip_bytes_per_node_s, sync_bytes_per_node_s: bytes each member sends per
            second in datagrams (seal included) and in push-pull exchanges (both ways,
            counted once), over the run.
        max_datagram_bytes: the largest datagram sent.
        partitions_moved_join, partitions_moved_crash: partitions (of 4,096) whose
            replica set changes when one member joins or leaves.
        sim_seconds: simulated time of the whole run.
    """

    nodes: int
    join_rounds: float | None = None
    crash_rounds: float | None = None
    convergence_rounds: float | None = None
    gossip_per_node_round: float = 0.0
    gossip_bytes_per_node_s: float = 0.0
    sync_bytes_per_node_s: float = 0.0
    datagrams: int = 0
    lost: int = 0
    duplicated: int = 0
    syncs: int = 0
    max_datagram_bytes: int = 0
    partitions_moved_join: int = 0
    partitions_moved_crash: int = 0
    sim_seconds: float = 0.0

    @property
    def converged(self) -> bool:
        return None not in (self.join_rounds, self.crash_rounds, self.convergence_rounds)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["converged"] = self.converged
        return out


def simulate_membership(nodes: int, seed: int, plan: FaultPlan, trace: TraceRecorder,
                        settings: SwimSettings | None = None) -> MembershipRun:
    """Run the three phases on ``nodes`` members; deterministic in ``seed``."""
    if nodes < 3:
        raise ValueError(f"the membership simulation needs at least 3 nodes, got {nodes}")
    settings = settings or SwimSettings()
    period = settings.probe_interval_s
    lo, hi = plan.latency_ms
    net = SimulatedNetwork(settings, seed=seed, loss=plan.loss, duplicate=plan.duplicate,
                           latency_s=(lo / 1000, hi / 1000), trace=trace)
    chance = random.Random(f"membership/{seed}")
    run = MembershipRun(nodes=nodes)
    names = [p.name for p in net.add_converged(nodes)]
    net.run(period)  # the first probes spread over a period, as in a running cluster
    start = (net.datagrams, net.datagram_bytes, net.sync_bytes, net.now)

    def rounds_until(condition: Any) -> float | None:
        took = net.run_until(condition, _PHASE_LIMIT_ROUNDS * period, check_every_s=period / 4)
        return None if took is None else took / period

    # 1. join
    net.add("joiner", seeds=[net.address_of(chance.choice(names))])
    run.join_rounds = rounds_until(lambda: net.all_see("joiner", "alive"))
    names.append("joiner")
    # 2. crash
    victim = chance.choice(names)
    net.crash(victim)
    names.remove(victim)
    run.crash_rounds = rounds_until(lambda: _all_see_gone(net, victim))
    # 3. faults, then the heal
    _strike(net, plan, names, chance, settings)
    run.convergence_rounds = rounds_until(net.full_view)

    ring = HashRing(names)
    table = PartitionTable.build(ring)
    run.partitions_moved_join = len(table.moves(PartitionTable.build(
        ring.with_member("newcomer"))))
    run.partitions_moved_crash = len(table.moves(PartitionTable.build(
        ring.without_member(names[0]))))
    running = {p.name for p in net.live()}
    run.datagrams, run.lost, run.duplicated = net.datagrams, net.lost, net.duplicated
    run.syncs, run.max_datagram_bytes = net.syncs, net.max_datagram_bytes
    run.sim_seconds = net.now
    seconds = max(net.now - start[3], period)
    per_node_s = max(1, len(running)) * seconds
    run.gossip_per_node_round = round(
        (net.datagrams - start[0]) / per_node_s * period, 3)
    run.gossip_bytes_per_node_s = round((net.datagram_bytes - start[1]) / per_node_s, 1)
    run.sync_bytes_per_node_s = round((net.sync_bytes - start[2]) / per_node_s, 1)
    trace(f"{net.now!r} end {len(running)} running, view {_view_digest(net)}")
    return run


def _all_see_gone(net: SimulatedNetwork, name: str) -> bool:
    for p in net.live():
        m = p.member(name)
        if m is not None and m.status in ("alive", "suspect"):
            return False
    return True


def _view_digest(net: SimulatedNetwork) -> int:
    """How many distinct live sets (hence rings) the running members hold: 1 when
    converged."""
    views = {tuple(sorted(m.name for m in p.members() if m.status == "alive"))
             for p in net.live()}
    return len(views)


def _strike(net: SimulatedNetwork, plan: FaultPlan, names: list[str],
            chance: random.Random, settings: SwimSettings) -> None:
    """The faults phase: the plan's pauses and crashes from the second round, its
    partition from the fifth, all of it until :data:`FAULT_WINDOW_S`; then the network
    heals, the paused wake and the crashed restart, at the same moment, from which
    ``convergence_rounds`` counts."""
    n = len(names)
    step = settings.probe_interval_s
    affected = max(1, n // 50)
    paused = chance.sample(names, affected) if plan.pause else []
    crashed = [m for m in chance.sample(names, affected + 1)
               if m not in paused] if plan.crash or plan.crash_disk else []
    side = chance.sample(names, max(1, n // 3)) if plan.partition else []
    net.run(2 * step)
    for name in paused:
        net.pause(name, FAULT_WINDOW_S - 2 * step)
    for name in crashed:
        net.crash(name)
    net.run(3 * step)
    if side:
        net.partition([side])
    net.run(FAULT_WINDOW_S - 5 * step)
    net.heal()
    survivors = [m for m in names if m not in crashed]
    for name in crashed:  # with or without disk, membership starts a new life
        net.restart(name, seeds=[net.address_of(chance.choice(survivors))])
