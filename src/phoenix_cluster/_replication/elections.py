"""Elections of a replicator: eager elections and their batched queue, elections on
demand, re-elections (a new replica set, a catch-up) and their queue, retries, and the
catch-up loop of a lagging replica. Each one is a :class:`Campaign` (``campaign.py``);
docs/design/replication.md, "Electing a leader", is the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from .._ring.partitions import PARTITIONS
from .._telemetry import events
from ..errors import NodeClosed, NoQuorum, NotLeader, PhoenixError
from .campaign import Campaign
from .core import Lead, ReplicatorCore
from .groups import group_name, partition_of_group
from .messages import Probe
from .sending import retrieve
from .types import config_union

_log = logging.getLogger("phoenix_cluster.replication")

EAGER_BATCH = 64
"""Eager elections run at most this many at a time."""
CATCH_UP_BACKOFF_MAX_S = 30.0
"""Longest wait between two catch-up probes of one lagging partition."""


class Elections(ReplicatorCore):
    """Who leads which group, and when this node runs for it."""

    # ----------------------------------------------------------------- table changes

    def _spawn_eager(self) -> None:
        if self._eager_task is None or self._eager_task.done():
            self._eager_task = self._tasks.spawn(self._eager_elections(), name="eager")

    def _table_changed(self, p: int) -> None:
        table = self._table
        assert table is not None
        if p in self._elections:
            self._recheck.add(p)
            return
        lead = self._leads.get(p)
        if lead is None:
            return
        if lead.electing is not None:
            self._recheck.add(p)
            return
        new = table.members(p)
        if new[0] != self.name:
            self._lose(p, "moved")
        elif tuple(sorted(new)) != lead.members:
            self._relead(p, lead)

    # ----------------------------------------------------------------- lagging replicas

    def lagging(self) -> list[int]:
        """Groups in use (partitions, and the groups of the other replica counts this
        node serves or holds records of) whose replica set (in this node's table) names
        this node but that no leader has caught up since this process started: until a
        leader marks it,
        this replica may lack committed writes (it restarted without its data, or with
        a file older than the partition's majority). A node is ready to serve, and an
        orchestrator may take the next node down, only once this is empty (a rolling
        restart must never leave a partition with one up-to-date copy). Everything
        while the node has no table yet."""
        table = self._table
        if table is None:
            return list(range(PARTITIONS))
        name, fresh, leads = self.name, self._fresh, self._leads
        return [g for g, members in table.groups()
                if name in members and g not in fresh and g not in leads
                and self._in_use(g)]

    async def _catch_up_loop(self) -> None:
        """Ask the primaries of lagging partitions to catch this replica up (a ``Probe``
        with ``catch_up``: the primary re-elects), each less and less often. Most need
        no asking: a rejoin changes the table, and primaries whose set changed re-elect
        on their own."""
        settings = self.settings
        while not self._closed:
            await self._clock.sleep(settings.retry_s)
            table = self._table
            if (table is None or self._leaving
                    or self._clock.monotonic() - self._table_changed_at
                    < settings.catch_up_after_s):
                continue
            lagging = self.lagging()
            if not lagging:
                # Caught up: nothing to do until the next table change.
                self._table_updated.clear()
                await self._table_updated.wait()
                continue
            now = self._clock.monotonic()
            backoff = self._catch_up_backoff
            for p in lagging:
                at, interval = backoff.get(p, (now, settings.retry_s))
                if now < at:
                    continue
                # Ask again later, less and less often: a primary that cannot elect (no
                # majority yet) must not be asked every second by every lagging replica.
                backoff[p] = (now + interval, min(interval * 2, CATCH_UP_BACKOFF_MAX_S))
                primary = table.primary(p)
                if primary == self.name:
                    self._queue_election(p)
                elif primary in self._alive:
                    self._sender.send(primary, Probe(p, catch_up=True)).add_done_callback(
                        retrieve)

    def _catch_up(self, p: int, lead: Lead) -> None:
        """Re-elect ``p`` to catch its replicas up (an unsynced refusal, a catch-up
        probe), at most once per partition per ``retry_s``: a replica that stays behind
        (its promise keeps getting lost) must not cause an election per write."""
        now = self._clock.monotonic()
        if not self._closed and now - self._catch_ups.get(p, -1e18) >= self.settings.retry_s:
            self._catch_ups[p] = now
            self._relead(p, lead)

    # ----------------------------------------------------------------- elections

    async def _eager_elections(self) -> None:
        # While membership still moves (a cluster forming, a node rejoining), members'
        # tables disagree on primaries and eager candidates would depose each other:
        # wait until this node's table has been stable for a moment. Calls still elect
        # their own partition at once.
        # Alone, nobody can depose this node's candidates: no need to wait.
        settle = 0.0 if self._alive == {self.name} else self.settings.eager_settle_s
        while (wait := self._table_changed_at + settle - self._clock.monotonic()) > 0:
            await self._clock.sleep(wait)
        await self._in_batches(self._eager_pending, self._elect_queued)

    def _elect_queued(self, p: int) -> asyncio.Future[Lead] | None:
        """Elect ``p`` if this node is its primary; the election to wait for, if any."""
        table = self._table
        if table is None or table.primary(p) != self.name:
            return None
        self._maybe_elect(p)
        return self._elections.get(p)

    async def _in_batches(self, pending: list[int],
                          start: Callable[[int], asyncio.Future[Any] | None]) -> None:
        """Take the groups of the queue ``pending`` (changed in place, never replaced)
        ``EAGER_BATCH`` at a time and ``start`` each; the next batch waits until every
        future of this one is done (or, when none started, for one turn of the loop)."""
        while pending and not self._closed:
            batch = pending[:EAGER_BATCH]
            del pending[:EAGER_BATCH]
            waiting = [fut for p in batch if (fut := start(p)) is not None]
            if waiting:
                await asyncio.wait(waiting)
            else:
                await asyncio.sleep(0)

    def _maybe_elect(self, p: int) -> None:
        if p in self._leads or p in self._elections or self._closed or self._leaving:
            return
        fut = self._start_election(p, ask_first=True)
        fut.add_done_callback(partial(self._eager_done, p))

    def _eager_done(self, p: int, fut: asyncio.Future[Lead]) -> None:
        if fut.cancelled() or fut.exception() is None or self._closed:
            return
        _log.debug("eager election of %s on %s failed: %s", group_name(p), self.name,
                   fut.exception())
        if p not in self._retries:
            self._retries[p] = self._clock.call_later(self.settings.retry_s,
                                                      partial(self._retry, p))

    def _lose(self, p: int, reason: str) -> None:
        """Step down (``core.py``); a primary that lost its lead for any reason but a
        move (fenced, deposed, no quorum) runs again after ``retry_s``, in the batched
        queue. Without traffic nobody else would: the partition stayed leaderless until
        a call or a table change, and its lagging replicas were not caught up."""
        had = p in self._leads
        super()._lose(p, reason)
        if (had and reason != "moved" and self.settings.eager and not self._closed
                and p not in self._retries):
            self._retries[p] = self._clock.call_later(self.settings.retry_s,
                                                      partial(self._retry, p))

    def _retry(self, p: int) -> None:
        # Back into the batched queue, not straight to an election (so are catch-ups):
        # after a node's death every partition it led fails its first election together,
        # and retrying them all at once (1,365 of 4,096 on three nodes) swamps a loaded
        # loop, so the promises of the next round time out too and calls wait behind.
        self._retries.pop(p, None)
        table = self._table
        if table is not None and table.primary(p) == self.name:
            self._queue_election(p)

    def _queue_election(self, p: int) -> None:
        """Elect ``p`` in the background, in the batched queue of eager elections (a
        duplicate entry is harmless: the batch skips a group led or being elected)."""
        if p in self._leads or p in self._elections or self._closed or self._leaving:
            return
        self._eager_pending.append(p)
        self._spawn_eager()

    async def _ensure(self, p: int) -> Lead:
        """Lead ``p``: at once if leading, else after the (shared) election."""
        if self._closed:
            raise NodeClosed(f"node {self.name} is closed")
        if self._leaving and p not in self._leads:
            raise NotLeader(f"node {self.name} is leaving: it leads no new partition",
                            partition=partition_of_group(p), definite=True)
        lead = await self._settled(p)
        if lead is not None:
            return lead
        fut = self._elections.get(p) or self._start_election(p)
        return await asyncio.shield(fut)

    async def _settled(self, p: int) -> Lead | None:
        """This node's leadership of ``p`` once any re-election of it is over."""
        lead = self._leads.get(p)
        while lead is not None and lead.electing is not None:
            with contextlib.suppress(PhoenixError):
                await asyncio.shield(lead.electing)
            lead = self._leads.get(p)
        return lead

    def _start_election(self, p: int, *, ask_first: bool = False) -> asyncio.Future[Lead]:
        fut: asyncio.Future[Lead] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve)
        self._elections[p] = fut
        self._tasks.spawn(self._run_election(p, fut, ask_first), name=f"elect-{p}")
        return fut

    async def _run_election(self, p: int, fut: asyncio.Future[Lead], ask_first: bool) -> None:
        try:
            table = self._table
            if (ask_first and table is not None and self.name in table.members(p)
                    and not await self._campaign(p, None).feasible()):
                raise NoQuorum(f"{group_name(p)}: too few members of its replica sets are "
                               f"alive in node {self.name}'s view to elect it (pre-vote)",
                               definite=True)
            lead = await self._elect(p, None)
        except asyncio.CancelledError:
            if not fut.done():
                fut.set_exception(NodeClosed(f"node {self.name} stopped"))
            raise
        except Exception as exc:
            self._elections_failed += 1
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(lead)
        finally:
            if self._elections.get(p) is fut:
                del self._elections[p]
        self._after_election(p)

    def _relead(self, p: int, lead: Lead) -> None:
        """Re-elect a partition this node leads (new replica set, or a catch-up), in
        the batched queue of re-elections."""
        if (lead.electing is not None or self._closed or p in self._relead_queued
                or p in self._relead_asking):
            return
        # A table change re-elects every partition whose set changed: with three
        # members, a death or a heal changes all 4,096. Started together, they held
        # every write of the node (a write waits while its partition is re-elected)
        # until the last one was done, seconds on a loaded machine. Queued, a partition
        # keeps serving under its current epoch and config (still a majority, or it
        # could not have served before) until its turn, EAGER_BATCH at a time.
        self._relead_queued.add(p)
        self._relead_pending.append(p)
        if self._relead_task is None or self._relead_task.done():
            self._relead_task = self._tasks.spawn(self._releads(), name="releads")

    async def _releads(self) -> None:
        await self._in_batches(self._relead_pending, self._start_relead)

    def _start_relead(self, p: int) -> asyncio.Future[None] | None:
        """Re-elect the queued ``p`` unless it was lost or is being re-elected."""
        self._relead_queued.discard(p)
        lead = self._leads.get(p)
        if (lead is None or lead.electing is not None or self._closed
                or p in self._relead_asking):
            return None  # lost, or already being re-elected meanwhile
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve)
        self._relead_asking.add(p)
        self._tasks.spawn(self._run_relead(p, lead, fut), name=f"relead-{p}")
        return fut

    async def _ask_first(self, p: int, lead: Lead, fut: asyncio.Future[None]) -> bool:
        """The pre-vote of a re-election, while the partition keeps serving (writes do
        not wait for it). ``False``: the re-election would fail now (a member of a set
        it needs is not alive in this view, as right after a heal), so it is not held:
        the lead keeps serving under its current config, which is safe (it is the
        config its election marked, and a write still needs a majority of it), and the
        re-election is queued again after ``retry_s``."""
        try:
            feasible = await self._campaign(p, lead).feasible()
        except PhoenixError:
            feasible = True  # the re-election itself will tell
        finally:
            self._relead_asking.discard(p)
        if self._leads.get(p) is not lead or self._closed or lead.electing is not None:
            fut.set_result(None)  # lost or re-elected meanwhile
            return False
        if not feasible:
            self._clock.call_later(self.settings.retry_s, partial(self._relead_again, p, lead))
            fut.set_result(None)
            return False
        lead.electing = fut
        return True

    def _relead_again(self, p: int, lead: Lead) -> None:
        if self._leads.get(p) is lead:
            self._relead(p, lead)

    async def _run_relead(self, p: int, lead: Lead, fut: asyncio.Future[None]) -> None:
        if not await self._ask_first(p, lead, fut):
            return
        try:
            # Let writes of the current epoch finish first: the new promises would
            # refuse them and fence this very leader.
            while lead.inflight:
                lead.idle = asyncio.Event()
                await lead.idle.wait()
            await self._elect(p, lead)
        except asyncio.CancelledError:
            if not fut.done():
                fut.set_exception(NodeClosed(f"node {self.name} stopped"))
            raise
        except Exception as exc:
            self._elections_failed += 1
            if self._leads.get(p) is lead:
                self._lose(p, "no_quorum" if isinstance(exc, NoQuorum) else "fenced")
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(None)
        finally:
            lead.electing = None
        self._after_election(p)

    def _after_election(self, p: int) -> None:
        if p in self._recheck and not self._closed:
            self._recheck.discard(p)
            self._table_changed(p)

    def _campaign(self, p: int, previous: Lead | None) -> Campaign:
        """The campaign for ``p`` over this node's table (asking the old sets too)."""
        table = self._table
        assert table is not None
        extra = self._old.get(p, ())
        if previous is not None:
            extra = config_union(extra, previous.config)
        return Campaign(self._ctx, p, tuple(sorted(table.members(p))), extra)

    async def _elect(self, p: int, previous: Lead | None) -> Lead:
        """Win ``p`` (a :class:`Campaign`) and install the leadership (step 10)."""
        table = self._table
        if table is None:
            raise NoQuorum(f"node {self.name} has no partition table yet", definite=True)
        order = table.members(p)
        if self.name not in order:
            raise NotLeader(f"node {self.name} is not in the replica set {list(order)} of "
                            f"{group_name(p)}", partition=partition_of_group(p), definite=True)
        self._elections_run += 1
        started = self._clock.monotonic()
        won = await self._campaign(p, previous).run()
        lead = Lead(won.epoch, won.target, won.plan.next_seq, started)
        self._leads[p] = lead
        self._fresh.add(p)
        left = tuple(s for s in self._old.get(p, ()) if s not in won.config)
        if left:
            self._old[p] = left
        else:
            self._old.pop(p, None)
        duration = self._clock.monotonic() - started
        plan = won.plan
        _log.debug("node %s leads %s at epoch %s (%d records, %d restamped, %.1f ms)",
                   self.name, group_name(p), won.epoch, len(plan.final), plan.restamped,
                   duration * 1000)
        if self._bus is not None and self._bus.has_handlers(events.REPLICATION_EPOCH_CHANGED):
            self._bus.execute(
                events.REPLICATION_EPOCH_CHANGED,
                {"duration": duration, "adopted": float(len(plan.final)),
                 "restamped": float(plan.restamped), "rounds": float(won.rounds)},
                {"node": self.name, "partition": partition_of_group(p),
                 "epoch": str(won.epoch), "replicas": list(won.target)},
            )
        if previous is not None and plan.stale:
            self._notify_lost(p, "stale", won.epoch)
        if self.on_led is not None and p < PARTITIONS:  # reminders keep 3 replicas
            try:
                self.on_led(p)
            except Exception:  # pragma: no cover - a bug in the hook
                _log.exception("on_led(%d) of node %s failed", p, self.name)
        return lead
