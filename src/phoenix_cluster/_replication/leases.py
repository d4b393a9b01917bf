"""Reads on the leader: a key's newest record (``load``, before an activation), a
group's committed records (``committed``, for a backup), and read leases.

A read lease lets a leader answer reads from its memory only while no other can lead.

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

import asyncio
import contextlib

import msgspec

from ..errors import NotLeader, PhoenixError, ProtocolError
from .commits import Commits, wait_for
from .core import Lead
from .groups import DEFAULT_REPLICAS, group_for, group_name, partition_of_group
from .messages import WireEntry
from .types import Record

__all__ = ["ReadLeases"]


class ReadLeases(Commits):
    """Loads and backups' reads on the leader, and the leader side of read leases (the
    replica side is in ``replica.py``)."""

    async def committed(self, partition: int) -> list[WireEntry]:
        """Every record of ``partition`` (a group: ``group_for``) a majority of its
        replicas stored, leading it first (an election, as :meth:`load`), for a backup.

        The records are read from this node's store, which as the leader's holds every
        committed record and, for a moment, the writes still in flight. A round sent
        after those writes (an accept with no entries) confirms this node still leads,
        and the read waits for the verdict of every write still in flight when it read:
        a write that failed makes this node step down and the read fail.

        Raises:
            NotLeader: this node is not in the partition's replica set (definite), or it
                stepped down while reading (definite: nothing was written).
            NoQuorum: too few replicas answered.
        """
        lead = await self._ensure(partition)
        state = self._store.partition(partition)
        records = [] if state is None else list(state.wire_entries())
        # The writes among those records still in flight, each decided by its own
        # replies: a batch lost to a broken connection is followed by the next one on a
        # new connection, so the round alone can be answered before an earlier write's
        # verdict (which may then fail it).
        earlier = [wait_for(group) for group in lead.undecided]
        await wait_for(self._group(partition, lead))
        if earlier:
            await asyncio.wait(earlier)
            for waiter in earlier:
                if waiter.exception() is not None:
                    raise NotLeader(f"node {self.name} stopped leading "
                                    f"{group_name(partition)}: a write among the records "
                                    "read failed", partition=partition_of_group(partition),
                                    definite=True)
        if self._leads.get(partition) is not lead:
            raise NotLeader(f"node {self.name} stopped leading {group_name(partition)} "
                            "while reading it", partition=partition_of_group(partition),
                            definite=True)
        return records

    async def load(self, kind: str, key: str,
                   replicas: int = DEFAULT_REPLICAS) -> Record | None:
        """The newest committed record of ``(kind, key)``, leading its group first.

        A kind's records live in the group of its partition for its ``replicas``
        (``groups.py``). If this node does not lead the group, it runs an election: it
        gets promises of a higher epoch from majorities of the replica sets (old and
        new), adopts the newest records they show and copies them to a majority of the
        new set.

        Returns:
            The record, or ``None`` if the key was never written.

        Raises:
            NotLeader: this node is not in the partition's replica set (definite).
            NoQuorum: too few replicas answered (definite).
            NodeClosed: the replicator is closed.
        """
        p = group_for(kind, key, replicas)
        lead = self._leads.get(p)
        if lead is not None and lead.electing is None and (
                self._clock.monotonic() - lead.confirmed > self.settings.confirm_after_s):
            await self._confirm(p, lead)
            lead = self._leads.get(p)
        if lead is None or lead.electing is not None:
            await self._ensure(p)
        entry = self._store.get(p, kind, key)
        if entry is None:
            return None
        try:
            return entry.record
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Replicas store the window without parsing it (types.Entry): a peer's bug
            # shows here, on the one key, as a typed error.
            raise ProtocolError(f"the stored dedup window of {kind}/{key} is malformed: "
                                f"{exc}") from exc

    async def _confirm(self, p: int, lead: Lead) -> None:
        """Ask a majority whether this node still leads ``p`` (an accept with no
        entries, or the writes going out anyway); steps down if not."""
        with contextlib.suppress(PhoenixError):
            await wait_for(self._group(p, lead))


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
