"""Barriers across agents and nodes: ``await barrier(node, name, party, parties)``
returns once ``parties`` distinct parties have arrived at ``name``.

The barrier's agent counts arrivals; a waiting party polls it (every 20 ms at first,
backing off to 0.5 s), so the agent never blocks on a caller. A barrier is reusable:
once a round fills, the next arrivals start the next round.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import BarrierMismatch, CallTimeout
from .agents import BarrierAgent
from .barrier_state import Arrival
from .leases import Refs, check_count, check_name, check_seconds

__all__ = ["barrier"]

_FIRST_POLL_S = 0.02
_MAX_POLL_S = 0.5


async def barrier(node: Refs, name: str, party: str, parties: int, *,
                  timeout: float = 30.0) -> int:
    """Arrive at barrier ``name`` as ``party`` and wait for ``parties`` parties.

    Args:
        node: the node (or an agent's ``self.node``) to call from.
        name: the barrier's name.
        party: this party's name, distinct among the parties (arriving twice in one
            round counts once).
        parties: how many parties the barrier waits for; the same for every party.
        timeout: seconds to wait for the others.

    Returns:
        The round (generation) that this party passed, counting from 0.

    Raises:
        BarrierMismatch: the round under way waits for another number of parties;
            this party was not counted.
        CallTimeout: the others did not all arrive within ``timeout``; this party was
            withdrawn from the round (``definite=True``), or, if the withdrawal itself
            failed, may still count in it (``definite=False``).
        ConfigError: a bad name, party, parties or timeout.
    """
    ref = node.ref(BarrierAgent, check_name("name", name))
    check_name("party", party)
    check_count("parties", parties)
    deadline = time.monotonic() + check_seconds("timeout", timeout)
    arrival: Arrival = await ref.arrive(party, parties)
    if arrival.status == "mismatch":
        raise BarrierMismatch(f"barrier {name!r} waits for {arrival.parties} parties in its "
                              f"current round, not {parties}; {party!r} was not counted")
    poll = _FIRST_POLL_S
    while arrival.status != "passed":
        left = deadline - time.monotonic()
        if left <= 0:
            arrival = await ref.leave(party, arrival.generation)
            if arrival.status == "passed":
                break
            raise CallTimeout(f"barrier {name!r}: {arrival.arrived} of {parties} parties "
                              f"arrived within {timeout} s; {party!r} withdrew",
                              definite=True)
        await asyncio.sleep(min(poll, left))
        poll = min(poll * 2, _MAX_POLL_S)
        arrival = await ref.poll(arrival.generation)
    return arrival.generation
