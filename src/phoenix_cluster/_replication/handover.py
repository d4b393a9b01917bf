"""A graceful leave: hand every partition this node leads to its next primary, and
keep answering until the partitions that still need this node's copy are safe
(replication.md, "Rolling restarts")."""

from __future__ import annotations

import asyncio
import logging

from .._ring.partitions import PartitionTable
from .core import Lead, ReplicatorCore
from .groups import GroupTable
from .messages import Known, Probe, Reply
from .sending import result_of, retrieve
from .types import Epoch, config_members, majority

_log = logging.getLogger("phoenix_cluster.replication")


class HandOver(ReplicatorCore):
    """:meth:`hand_over` and its steps."""

    async def hand_over(self, partitions: PartitionTable, timeout_s: float) -> int:
        """A graceful leave: hand every partition this node leads to its primary in
        ``table`` (the table without this node) before the node stops serving.

        Each next primary is asked (a ``take_over`` probe) to elect itself now, while this
        node still answers: this node promises the new epoch (which fences its own
        writes) and shows everything it committed, so the next leader adopts it all and
        copies it to a majority before it serves. From here on this node starts no
        election (``load`` raises a definite ``NotLeader``: callers route again).
        Returns how many partitions were handed over; those still led after
        ``timeout_s`` are left to the elections that follow the leave (logged).
        """
        self._leaving = True
        self._eager_pending.clear()  # in place: the eager loop drains this list
        table = GroupTable(partitions)
        handed = set(self._leads)
        deadline = self._clock.monotonic() + timeout_s
        # Hold new writes of every partition it leads and let the running ones finish:
        # the successor's promise then fences nothing in flight. A write that waited
        # finds the partition gone and fails definite (nothing stored: routed again).
        holds = self._hold_writes()
        try:
            while (any(lead.inflight for lead, _ in holds.values())
                   and self._clock.monotonic() < deadline and not self._closed):
                await self._clock.sleep(0.01)
            asked_at, asked_alive = -1e18, self._alive
            needed: list[int] = []
            # Partitions that needed this node: re-marked without needing it, they are
            # done only once the other members confirm they took the mark too (a
            # majority of the new config may be this node and the leader alone, the
            # third still catching up: without this node, no synced majority).
            watched: set[int] = set()
            confirmed: set[int] = set()
            probed: set[int] = set()
            checked_at = -1e18
            while not self._closed:
                for p in [p for p in holds if p not in self._leads]:
                    self._release_hold(holds.pop(p))
                now = self._clock.monotonic()
                moved = self._alive != asked_alive  # membership changed since the asks
                if moved or now - checked_at >= 0.1:  # a scan of every partition
                    needed, checked_at = self._needed_here(), now
                    confirmed.difference_update(needed)
                    watched.update(needed)
                    watched -= confirmed
                if not self._leads and not needed and not watched:
                    break
                if self.others_leaving:
                    # Every other member said it is leaving too (a whole cluster
                    # stopping): nobody will take anything over. Each keeps what it
                    # stored (its data_dir, if any) as after a crash of all at once.
                    _log.info("node %s: every other member is leaving too; it leaves "
                              "still leading %d partitions", self.name, len(self._leads))
                    break
                if now >= deadline:
                    _log.warning("node %s leaves still leading %d partitions and needed by %d "
                                 "more (no successor took them within %.1f s)", self.name,
                                 len(self._leads), len(watched.union(needed)), timeout_s)
                    break
                # Again every retry_s, and at once when membership changed: a death
                # noticed late in the budget leaves little time for the re-elections.
                if moved or now - asked_at >= self.settings.retry_s:
                    asked_at, asked_alive = now, self._alive
                    # Probed last round and still unconfirmed: a member missed the mark.
                    missed = sorted(probed & watched - confirmed - set(needed))
                    self._ask_successors(table, needed + missed)
                    probed = watched.difference(needed, missed)
                    self._confirm_marks(sorted(probed), confirmed)
                await self._clock.sleep(0.02)
        finally:
            for hold in holds.values():
                self._release_hold(hold)
        return len(handed) - len(handed & set(self._leads))

    def _ask_successors(self, table: GroupTable, needed: list[int]) -> None:
        """Ask for the elections a leave needs: each partition led here from its next
        primary; each partition led elsewhere that needs this node's copy from its
        leader (a re-election: the new config has a majority without this node once
        membership says who is gone), or from its next primary when the leader is gone."""
        for p in list(self._leads):
            target = self._successor(table, p)
            if target is not None:
                self._ask(target, Probe(p, take_over=True))
        for p in needed:
            leader = self._store.promised(p).leader.rpartition("#")[0]
            target = leader if leader in self._alive and leader != self.name \
                and leader not in self._peers_leaving else self._successor(table, p)
            if target is not None:
                self._ask(target, Probe(p, catch_up=True, take_over=True))

    @property
    def others_leaving(self) -> bool:
        """Every other member this node sees alive said it is leaving too (known once
        :meth:`hand_over` asked them)."""
        return not self._alive - self._peers_leaving - {self.name}

    def _ask(self, target: str, probe: Probe) -> None:
        """Send a take-over probe; note ``target`` as leaving if it answers so."""
        def note(fut: asyncio.Future[Reply]) -> None:
            if isinstance(reply := result_of(fut), Known) and reply.leaving:
                self._peers_leaving.add(target)

        self._sender.send(target, probe).add_done_callback(note)

    def _confirm_marks(self, partitions: list[int], confirmed: set[int]) -> None:
        """Probe the other alive members of each partition's config (read only); a
        partition joins ``confirmed`` once all of them report the mark this node took,
        synced. One that did not take it (its catch-up was fenced by a later election)
        is caught up by its leader's re-election, which the next round asks for."""
        for p in partitions:
            state = self._store.partition(p)
            if state is None:
                confirmed.add(p)
                continue
            others = sorted((config_members(state.config) & self._alive) - {self.name})
            replies = [self._sender.send(member, Probe(p)) for member in others]

            def check(_: object, p: int = p, marked: Epoch = state.marked,
                      replies: list[asyncio.Future[Reply]] = replies) -> None:
                if all(f.done() for f in replies) and all(
                        isinstance(r := result_of(f), Known) and r.marked >= marked
                        and r.synced for f in replies):
                    confirmed.add(p)

            if not replies:
                confirmed.add(p)
            for fut in replies:
                fut.add_done_callback(check)

    def _needed_here(self) -> list[int]:
        """Partitions led elsewhere whose marked config keeps no majority of alive
        members without this node in some set (a member of it died): once this node is
        gone, no election finds a synced majority there, and what only it and the dead
        member hold would be lost. A set that has no alive majority even with this node
        is left out: asking cannot help it."""
        others = self._alive - {self.name}
        needed = []
        for p, state in self._store.partitions():
            if p in self._leads:
                continue
            for members in state.config:
                if (self.name in members and not self._alive.issuperset(members)
                        and len(others.intersection(members)) + 1 == majority(members)):
                    needed.append(p)
                    break
        return needed

    def _successor(self, table: GroupTable, p: int) -> str | None:
        """Who should take ``p`` over from this leaving node: its first replica in
        ``table`` (the table without this node) that is still alive in this node's view.

        A member that died after the leave began (or before, undetected) is skipped
        once membership says so: the ring walk without it names the same members in the
        same order, so the next one is the primary of the table the others will build.
        Asking only the dead primary would leave ``p`` led by nobody but this node when
        it goes, with its records on one remaining replica (replication.md, "Rolling
        restarts": a death during a leave)."""
        for member in table.members(p):
            if (member != self.name and member in self._alive
                    and member not in self._peers_leaving):
                return member
        return None

    def _hold_writes(self) -> dict[int, tuple[Lead, asyncio.Future[None]]]:
        """Make new writes of every partition led here wait (as during a re-election)."""
        loop = asyncio.get_running_loop()
        holds = {}
        for p, lead in self._leads.items():
            if lead.electing is None:
                fut: asyncio.Future[None] = loop.create_future()
                fut.add_done_callback(retrieve)
                lead.electing = fut
                holds[p] = (lead, fut)
        return holds

    @staticmethod
    def _release_hold(hold: tuple[Lead, asyncio.Future[None]]) -> None:
        lead, fut = hold
        if lead.electing is fut:
            lead.electing = None
        if not fut.done():
            fut.set_result(None)
