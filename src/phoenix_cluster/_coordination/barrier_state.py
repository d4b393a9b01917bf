"""The rules of a reusable barrier, as a pure state machine.

A :class:`BarrierState` is the replicated state of one barrier name: how many parties
it waits for, which have arrived in the current generation, and the generation number.
When the last party arrives the generation ends (``generation`` goes up by one) and the
next arrivals start a new one, so one barrier serves round after round.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Arrival", "BarrierState"]


class Arrival(msgspec.Struct):
    """The answer to an arrival: the generation the caller waits in, whether that
    generation has already ended, and the barrier's party count."""

    status: Literal["waiting", "passed", "mismatch"]
    generation: int
    arrived: int
    parties: int


class BarrierState(msgspec.Struct):
    """``parties`` (0 before the first arrival), the current ``generation`` and the
    parties that ``arrived`` in it."""

    parties: int = 0
    generation: int = 0
    arrived: list[str] = msgspec.field(default_factory=list)

    def arrive(self, party: str, parties: int) -> Arrival:
        """Record ``party``'s arrival at a barrier of ``parties``.

        Arriving twice in one generation counts once (a retried arrival). A party
        count other than the barrier's, while a generation is under way, is refused
        (``mismatch``) and changes nothing; between generations a new count is adopted.
        """
        if self.arrived and parties != self.parties:
            return Arrival("mismatch", self.generation, len(self.arrived), self.parties)
        self.parties = parties
        if party not in self.arrived:
            self.arrived.append(party)
        generation = self.generation
        if len(self.arrived) >= parties:
            self.generation += 1
            self.arrived = []
            return Arrival("passed", generation, parties, parties)
        return Arrival("waiting", generation, len(self.arrived), parties)

    def leave(self, party: str, generation: int) -> Arrival:
        """Withdraw ``party`` from ``generation`` if it has not ended (a party that
        gives up waiting); answers ``passed`` if it already ended."""
        if generation < self.generation:
            return Arrival("passed", generation, self.parties, self.parties)
        if party in self.arrived:
            self.arrived.remove(party)
        return Arrival("waiting", self.generation, len(self.arrived), self.parties)

    def poll(self, generation: int) -> Arrival:
        """Whether ``generation`` has ended, without changing anything."""
        status: Literal["waiting", "passed"] = (
            "passed" if generation < self.generation else "waiting")
        return Arrival(status, generation, len(self.arrived), self.parties)
