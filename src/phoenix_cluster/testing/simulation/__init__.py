"""The deterministic whole-system simulator behind ``phx simulate`` (docs/simulation.md).

One seed drives everything: the network's delays, losses, duplicates and reordering,
the faults (partitions, pauses, crashes with and without disk), every node's random
source and the workload. Two layers run, each with the production code:

- :mod:`.membership`: every member's SWIM state machine and ring view, at full scale
  (1,000 members in one process);
- :mod:`.stack`: whole nodes (membership, ring, placement, replication, agent host) in
  virtual time, a few of them, under a workload whose every acknowledged write is
  checked.

Every event goes into one trace whose SHA-256 the report carries: the same seed gives
the same hash, byte for byte.
"""

from .faults import DEFAULT_FAULTS, FaultPlan, TraceRecorder
from .run import SimulationReport, replay_command, simulate

__all__ = ["DEFAULT_FAULTS", "FaultPlan", "SimulationReport", "TraceRecorder",
           "replay_command", "simulate"]
