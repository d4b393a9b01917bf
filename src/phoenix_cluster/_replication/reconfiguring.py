"""Changing a partition's replica set while its leader keeps writing.

A table change that keeps this node primary of a partition it leads (a member healed or
joined, or one died) used to re-elect the partition, and a re-election holds the
partition's writes for its prepare, catch-up and mark: a few round trips, past a call's
timeout on a loaded machine right after a heal. A :class:`Reconfiguration` runs the
election's last steps (catch-up, mark, release) under the leader's current epoch
instead, with joint quorums meanwhile, and writes go on throughout.
docs/design/replication.md, "Changing a replica set without holding writes", is the
protocol and why it is safe; where a condition there does not hold, the caller re-elects
as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .campaign import CampaignContext, catch_up_chunks
from .core import Lead
from .leader import Quorum
from .messages import Ack, Mark, Prepare, Promise, WireEntry
from .sending import decide, done_future, feed_quorum, item_size, result_of, retrieve
from .types import Config, RecordKey, Version, config_union, majority

__all__ = ["Reconfiguration", "can_reconfigure"]


def can_reconfigure(lead: Lead, target: tuple[str, ...], name: str, alive: frozenset[str],
                    old_hints: Config) -> bool:
    """Whether ``lead`` may take the replica set ``target`` (sorted, this node's table,
    which makes this node primary: checked by the caller) by a
    :class:`Reconfiguration`: the lead's config is its one set, to which ``target``
    only adds members or from which it only removes some (a replacement re-elects);
    every member added is alive in this view, and so is a majority of the current set;
    the members kept are a majority of ``target`` (so writes never need an added
    member's acknowledgement, which it gives only once caught up); and every old
    set the node remembers for the partition is inside the lead's set (another one, of
    an interrupted hand-over, is for a re-election to consult)."""
    old = lead.members
    if (lead.config != (old,) or name not in old
            or not (set(old) < set(target) or set(target) < set(old))):
        return False
    if not set(target) - set(old) <= alive:
        return False
    if sum(1 for m in old if m in alive) < majority(old):
        return False
    if majority(target) > sum(1 for m in target if m in old):
        return False
    return all(set(s) <= set(old) for s in old_hints)


class Reconfiguration:
    """Move partition ``p`` from ``lead.members`` to ``target`` under ``lead``'s epoch
    (``can_reconfigure`` held).

    Args:
        ctx: the node's parts.
        p: the partition.
        lead: this node's leadership of ``p``; its config becomes joint (the current
            and the new set) while the new set is caught up, then the new set.
        target: the new replica set, sorted.
        current: whether ``lead`` is still this node's leadership of ``p``.
    """

    def __init__(self, ctx: CampaignContext, p: int, lead: Lead, target: tuple[str, ...],
                 current: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.p = p
        self.lead = lead
        self.target = target
        self.current = current

    async def run(self) -> bool:
        """``True``: the new set is marked and the lead writes to it. ``False``: not
        possible this way (a refusal, a failure, an added member that holds something
        this leader does not, or the lead was lost); the caller re-elects (consulting
        the joint config if it was taken)."""
        ctx, p, lead, target = self.ctx, self.p, self.lead, self.target
        epoch, old = lead.epoch, lead.members
        added = tuple(m for m in target if m not in old)
        removed = tuple(m for m in old if m not in target)
        joint = config_union((old,), (target,))
        # 1. The added members promise the leader's epoch (as if its election's prepare
        # had reached them), recording the joint config as pending: a later candidate
        # that asks them learns where the data is. Their promises show what they hold.
        versions: dict[str, dict[RecordKey, Version]] = {}
        if added:
            promises = await self._ask(added, Prepare(p, epoch, joint))
            if promises is None or not self.current():
                return False
            for member, promise in promises.items():
                held = self._held(promise)
                if held is None:
                    return False
                versions[member] = held
        # 2. Writes from now on go to both sets and need a majority of each.
        lead.config = joint
        lead.members = tuple(sorted(set(old) | set(target)))
        # 3. Catch the new set up on everything this leader holds: every committed write
        # of the partition (it adopted them at its election and stores its own writes
        # first). Writes made meanwhile reach them with their own accepts. A kept member
        # lacks only what a removed one acknowledged in its place; its versions are not
        # known here, so it gets everything (when nobody is removed, the old majority
        # that holds each write plus the added members is a majority of the new set).
        state = ctx.store.partition(p)
        entries = [] if state is None else list(state.wire_entries())
        catching = list(added)
        if removed:
            catching += [m for m in target if m in old and m != ctx.name]
        caught = await asyncio.gather(*(self._catch_up(m, joint, entries, versions.get(m, {}))
                                        for m in catching))
        if not all(caught) or not self.current():
            return False
        # 4. Mark the new set on every member kept and a majority of each set; then it
        # alone is the config.
        if not await self._mark(joint, tuple(m for m in target if m in old)) \
                or not self.current():
            return False
        lead.config = (target,)
        lead.members = target
        # 5. Release: the removed members drop their copy (best effort: a dead one keeps
        # a harmless stale copy, as after an election).
        mark = Mark(p, epoch, (target,))
        for member in removed:
            if member in ctx.alive():
                ctx.sender.send(member, mark).add_done_callback(retrieve)
        return True

    async def _ask(self, members: tuple[str, ...],
                   item: Prepare) -> dict[str, Promise | None] | None:
        """Every member's promise of ``item.epoch``: its ``Promise``, or ``None`` when it
        had promised this very epoch already (to this leader: an earlier attempt, or its
        election's prepare answered late); ``None`` overall if any refused or failed."""
        ctx = self.ctx
        promises: dict[str, Promise | None] = {}
        waits = [(m, ctx.sender.send(m, item)) for m in members]

        def feed(node: str, fut: asyncio.Future[Any]) -> None:
            reply = result_of(fut)
            if isinstance(reply, Promise):
                if reply.ok:
                    ctx.note_promise(node, reply)
                    promises[node] = reply
                elif reply.promised == item.epoch:
                    promises[node] = None
                else:
                    ctx.note_seen(self.p, reply.promised)

        await decide(waits, feed, lambda: False)
        return promises if len(promises) == len(members) else None

    def _held(self, promise: Promise | None) -> dict[RecordKey, Version] | None:
        """What an added member needs no copy of: its versions when it is synced and this
        leader holds each of its keys at that version or newer; nothing (it gets every
        record, as an election's catch-up gives an unsynced or silent member) when it is
        unsynced or its promise was not new. ``None`` when it holds something newer or
        unknown here (an uncommitted write of an earlier leader, which an election
        would adopt): the caller re-elects."""
        if promise is None or not promise.synced:
            return {}
        state = self.ctx.store.partition(self.p)
        mine = {} if state is None else state.records
        held: dict[RecordKey, Version] = {}
        for kind, key, entry in promise.entries:
            own = mine.get((kind, key))
            if own is None or own.version < entry.version:
                return None
            held[(kind, key)] = entry.version
        return held

    async def _catch_up(self, member: str, config: Config, entries: list[WireEntry],
                        held: dict[RecordKey, Version]) -> bool:
        ctx = self.ctx
        lacks = [(kind, key, entry) for kind, key, entry in entries
                 if held.get((kind, key)) != entry.version]
        chunks = catch_up_chunks(self.p, config, self.lead.epoch, lacks,
                                 ctx.settings.batch_max_bytes // 2)
        replies = await asyncio.gather(*(ctx.sender.send(member, c, item_size(c))
                                         for c in chunks), return_exceptions=True)
        for reply in replies:
            if not (isinstance(reply, Ack) and reply.ok):
                if isinstance(reply, Ack) and reply.reason == "epoch":
                    ctx.note_seen(self.p, reply.promised)
                return False
        return True

    async def _mark(self, joint: Config, kept: tuple[str, ...]) -> bool:
        """Mark the new set; ``True`` once every member ``kept`` and a majority of each
        set of ``joint`` took it. Every kept member: a mark of the old set left on one
        would make later candidates require the old set too (marks of one epoch are
        not ordered: ``Election`` takes the union of the configs marked at the newest
        epoch), and the old set names members that may never come back."""
        ctx, lead = self.ctx, self.lead
        mark = Mark(self.p, lead.epoch, (self.target,))
        marked = Quorum(config_union(joint, tuple((m,) for m in kept)))
        alive = ctx.alive()
        waits: list[tuple[str, asyncio.Future[Any]]] = []
        for member in self.target:
            if member == ctx.name:
                reply = ctx.store.mark(mark)
                await ctx.persist()
                waits.append((member, done_future(reply)))
            elif member in alive:
                waits.append((member, ctx.sender.send(member, mark)))
            else:
                marked.fail(member)
        await decide(waits, lambda node, fut: feed_quorum(marked, node, fut),
                     lambda: marked.status != "pending")
        if marked.fenced_by is not None:
            ctx.note_seen(self.p, marked.fenced_by)
        return marked.status == "done"
