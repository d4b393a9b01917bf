"""Timers and limits of the replicator, each default explained once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplicationSettings"]


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """Timers and limits of a :class:`~.service.Replicator`.

    Attributes:
        rpc_timeout_s: how long one batch may take to answer. Far above a loopback or
            LAN round trip plus a disk commit; below the call timeout (5 s), so a dead
            replica costs a call at most this long before the quorum decides.
        election_attempts: elections retried after a refusal (another candidate won a
            promise); backs off between attempts.
        election_rounds: prepare rounds per attempt (each config the replicas report
            that the candidate did not ask adds one; four mean something is odd).
        backoff_s: base of the jittered, doubling backoff between attempts.
        retry_s: delay before retrying an eager election that failed.
        batch_max_bytes: a batch to one peer is cut here (well below the 16 MiB frame).
        batches_in_flight: batches sent to one peer before the first is answered. Two
            let the writes of the next loop turns leave while a batch is on its way,
            instead of waiting a whole round trip behind it (pipelining); more would
            mostly cut the same writes into more, smaller batches (more frames, more
            CPU per write). One waits for each answer.
        max_record_bytes: largest state plus replies ``commit`` accepts.
        max_replies: largest dedup window ``commit`` accepts.
        eager: the primary of a partition elects itself once the table names it, so
            failover does not wait for the first call.
        eager_settle_s: eager elections wait until the table has not changed for this
            long (members' views converge first; otherwise candidates depose each other).
        confirm_after_s: the leader's read lease. A leader answers a read (a call of a
            quorum kind that changed nothing) and a ``load`` from its memory only while
            a majority confirmed its leadership (an election, a commit, a
            confirmation) less than this long ago; else it confirms first, with one
            round trip. A replica that acknowledged a leader holds that leader's lease
            for :attr:`lease_hold_s` after: a new leader that could not depose the old
            one directly waits until then (docs/design/replication.md, "Read leases"),
            so a leader deposed while paused or cut off never answers from stale
            memory. Shorter: more round trips on quiet partitions; longer: a longer
            wait when a leader vanishes within its lease. Must be the same on every
            member.
        catch_up_after_s: a replica of a partition that no leader has caught up (marked)
            since this process started asks the partition's primary to do it, once the
            table has been stable this long, and again every ``retry_s``. The table
            change that a (re)joining member causes makes most primaries re-elect on
            their own; this covers the rest (a restart nobody noticed, a quiet partition).
            Only with ``eager``: without it, partitions are elected by their traffic alone.
    """

    rpc_timeout_s: float = 2.0
    election_attempts: int = 5
    election_rounds: int = 4
    backoff_s: float = 0.02
    retry_s: float = 1.0
    batch_max_bytes: int = 1 << 20
    batches_in_flight: int = 2
    max_record_bytes: int = 4 << 20
    max_replies: int = 256
    eager: bool = True
    eager_settle_s: float = 1.0
    confirm_after_s: float = 0.5
    catch_up_after_s: float = 3.0

    @property
    def lease_hold_s(self) -> float:
        """How long a replica holds the lease of a leader it acknowledged: the lease
        with a margin for clocks that run at slightly different rates (the lease counts
        from when the leader sent, the hold from when the replica answered, later)."""
        return self.confirm_after_s * 1.2
