"""Read leases: a leader answers reads from its memory only while no other can lead.

A call of a quorum kind that changed nothing commits nothing, so no replica fences it.
Without more, a leader deposed while it was paused or cut off would answer such a call
from stale memory until it learned of its successor. A leader therefore answers a read
only while a majority confirmed its leadership less than ``confirm_after_s`` ago (an
election, a commit, or a confirmation: an accept with no entries); replicas hold the
lease of the leader they acknowledged for ``lease_hold_s`` after, and a successor that
could not depose that leader directly waits it out (``campaign.py``,
``_outwait_leases``). docs/design/replication.md, "Read leases", argues why this is
safe and what it costs.
"""

from __future__ import annotations

from ..errors import NotLeader
from .commits import Commits
from .groups import DEFAULT_REPLICAS, group_for, group_name, partition_of_group

__all__ = ["ReadLeases"]


class ReadLeases(Commits):
    """The leader side of read leases (the replica side is in ``replica.py``)."""

    def lease_runs(self, kind: str, key: str, replicas: int = DEFAULT_REPLICAS) -> bool:
        """Whether this node may answer a read of ``(kind, key)`` from memory now: it
        leads the key's group, no re-election of it runs, and a majority confirmed the
        leadership less than ``confirm_after_s`` ago."""
        lead = self._leads.get(group_for(kind, key, replicas))
        return (lead is not None and lead.electing is None
                and self._clock.monotonic() - lead.confirmed <= self.settings.confirm_after_s)

    async def confirm_lease(self, kind: str, key: str,
                            replicas: int = DEFAULT_REPLICAS) -> None:
        """Renew the read lease on ``(kind, key)``'s group (one round trip to its
        replicas, or the end of a re-election), or learn that this node lost it.

        Raises:
            NotLeader: this node no longer leads the group (``definite=False``: the read
                ran on state that may be stale; ask the leader again).
        """
        p = group_for(kind, key, replicas)
        lead = await self._settled(p)
        rounds = 0
        while lead is not None and (self._clock.monotonic() - lead.confirmed
                                    > self.settings.confirm_after_s):
            if rounds == 3:  # each round slower than the lease: the machine is swamped
                lead = None
                break
            rounds += 1
            await self._confirm(p, lead)
            if self._leads.get(p) is not lead:
                lead = None
        if lead is None:
            raise NotLeader(f"node {self.name} no longer leads {group_name(p)} of "
                            f"{kind}/{key}: read not answered", partition=partition_of_group(p),
                            definite=False)
