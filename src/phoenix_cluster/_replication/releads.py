"""Re-elections of partitions this node leads (a new replica set, a catch-up): their
queue, their pre-vote, and the replica-set changes that need no re-election (a member
added or removed while this node stays primary: ``reconfiguring.py``).
docs/design/replication.md, "Handoff when the table changes", is the protocol.
"""

from __future__ import annotations

import asyncio
from functools import partial

from ..errors import NodeClosed, NoQuorum, PhoenixError
from .core import Lead
from .elections import Elections
from .reconfiguring import Reconfiguration, can_reconfigure
from .sending import retrieve

__all__ = ["Releads"]


class Releads(Elections):
    """The re-election queue of a replicator."""

    def _relead(self, p: int, lead: Lead) -> None:
        """Re-elect a partition this node leads (new replica set, or a catch-up), in
        the batched queue of re-elections."""
        if (lead.electing is not None or lead.reconfiguring is not None or self._closed
                or p in self._relead_queued or p in self._relead_asking):
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
        if (lead is None or lead.electing is not None or lead.reconfiguring is not None
                or self._closed or p in self._relead_asking):
            return None  # lost, or already being re-elected meanwhile
        if p not in self._relead_catch_up and self._holds_table_set(p, lead):
            # The table changed back before this re-election's turn (a member cut off and
            # healed while it was queued): the lead's marked config is the table's set, so
            # there is nothing to move, and a re-election would hold writes for nothing.
            # The old sets remembered are inside that config: asking them adds nobody.
            if all(set(s) <= set(lead.members) for s in self._old.get(p, ())):
                self._old.pop(p, None)
            return None
        self._relead_catch_up.discard(p)
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
        if (self._leads.get(p) is not lead or self._closed or lead.electing is not None
                or lead.reconfiguring is not None):
            fut.set_result(None)  # lost or re-elected meanwhile
            return False
        if not feasible:
            self._clock.call_later(self.settings.retry_s, partial(self._relead_again, p, lead))
            fut.set_result(None)
            return False
        return True

    def _holds_table_set(self, p: int, lead: Lead) -> bool:
        """Whether ``lead`` writes to exactly its set in this node's table."""
        table = self._table
        return (table is not None and lead.config == (lead.members,)
                and tuple(sorted(table.members(p))) == lead.members)

    def _relead_again(self, p: int, lead: Lead) -> None:
        if self._leads.get(p) is lead:
            self._relead(p, lead)

    async def _run_relead(self, p: int, lead: Lead, fut: asyncio.Future[None]) -> None:
        if not await self._ask_first(p, lead, fut):
            return
        if await self._reconfigured(p, lead, fut):
            return
        lead.electing = fut
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

    async def _reconfigured(self, p: int, lead: Lead, fut: asyncio.Future[None]) -> bool:
        """Take the table's new set for ``p`` without holding writes, under the lead's
        epoch (``reconfiguring.py``), when the conditions of ``can_reconfigure`` hold.
        ``True``: done, or the lead was lost meanwhile; ``False``: re-elect as before."""
        table = self._table
        if table is None or self._leaving:
            return False
        target = tuple(sorted(table.members(p)))
        if not can_reconfigure(lead, target, self.name, self._alive, self._old.get(p, ())):
            return False
        lead.reconfiguring = fut
        try:
            done = await Reconfiguration(self._ctx, p, lead, target,
                                         lambda: self._leads.get(p) is lead).run()
        except asyncio.CancelledError:
            if not fut.done():
                fut.set_exception(NodeClosed(f"node {self.name} stopped"))
            raise
        except PhoenixError:
            done = False
        finally:
            lead.reconfiguring = None
        if done:
            self._fresh.add(p)
            self._old.pop(p, None)  # (can_reconfigure: each is inside the lead's old set)
        if done or self._leads.get(p) is not lead or self._closed:
            if not fut.done():
                fut.set_result(None)
            self._after_election(p)
            return True
        return False

