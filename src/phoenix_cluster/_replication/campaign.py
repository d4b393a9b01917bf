"""Running one election: prepare rounds, discovery, probe, catch-up, mark, release.

A :class:`Campaign` carries out steps 1-9 of docs/design/replication.md ("Electing a
leader") for one partition, with the pure :class:`~.leader.Election` deciding each
round and the :class:`~.sending.Sender` carrying the items. The replicator installs
the leadership it returns (step 10).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .._foundation.env import Clock
from .._transport.tasks import TaskSet
from ..errors import NoQuorum, PhoenixError
from .leader import Election, Plan, Quorum
from .messages import Accept, Ack, Known, Mark, Prepare, Probe, Promise, Reply, WireEntry
from .replica import ReplicaStore
from .sending import (
    Sender,
    decide,
    deciding,
    done_future,
    feed_quorum,
    item_size,
    result_of,
    retrieve,
    worst,
)
from .settings import ReplicationSettings
from .types import ZERO_EPOCH, Config, Epoch, config_members, config_union

__all__ = ["Campaign", "CampaignContext", "Won"]

_log = logging.getLogger("phoenix_cluster.replication")

_LEASE_ASK_S = 0.02
"""How often a new leader asks an earlier one whose read lease may run, while it runs."""


@dataclass(frozen=True, slots=True)
class CampaignContext:
    """What a campaign uses of its node (the replicator builds one)."""

    name: str
    store: ReplicaStore
    sender: Sender
    tasks: TaskSet
    clock: Clock
    random: random.Random
    settings: ReplicationSettings
    alive: Callable[[], frozenset[str]]
    persist: Callable[[], Awaitable[None]]
    next_epoch: Callable[[int], Epoch]
    note_seen: Callable[[int, Epoch], None]
    lost: Callable[[], frozenset[str]]
    """Members gone with their memory for good (see ``Replicator.members_lost``)."""
    note_promise: Callable[[str, Promise], None]


@dataclass(frozen=True, slots=True)
class Won:
    """A won election: the epoch, the new set (sorted), the sets consulted, the plan."""

    epoch: Epoch
    target: tuple[str, ...]
    config: Config
    plan: Plan
    rounds: int


class Campaign:
    """One node's attempt to lead ``partition`` over the replica set ``target``.

    Args:
        ctx: the node's parts.
        partition: the partition.
        target: the new replica set, sorted; must name this node.
        extra: other sets to consult (old sets of a table change, the current config
            of a re-election).
    """

    def __init__(self, ctx: CampaignContext, partition: int, target: tuple[str, ...],
                 extra: Config) -> None:
        self.ctx = ctx
        self.partition = partition
        self.target = target
        self.extra = extra
        self.rounds = 0

    async def run(self) -> Won:
        """Attempts (after refusals, with backoff) of rounds (after discoveries).

        Raises:
            NoQuorum: too few replicas answered, or the attempts ran out (definite).
        """
        ctx, p, s = self.ctx, self.partition, self.ctx.settings
        family: Config = ()
        for attempt in range(s.election_attempts):
            if attempt:
                jitter = 0.5 + ctx.random.random()
                await ctx.clock.sleep(s.backoff_s * (2 ** attempt) * jitter)
            for _ in range(s.election_rounds):
                self.rounds += 1
                config = config_union(config_union(((self.target,)), self.extra), family)
                election = Election(p, ctx.next_epoch(p), self.target, config, family)
                await self._prepare(election)
                answered = ctx.clock.monotonic()
                status = election.status()
                if status == "refused":
                    assert election.refused_by is not None
                    ctx.note_seen(p, election.refused_by)
                    break
                if status in ("impossible", "pending"):
                    raise NoQuorum(
                        f"partition {p}: no majority of {list(config)} promised epoch "
                        f"{election.epoch} (answered: {sorted(election.promises)}, failed: "
                        f"{sorted(election.failed)}, lost: {sorted(election.lost)})",
                        definite=True)
                if status == "discover":
                    family = election.discovered()
                    continue
                if election.blank():
                    found = await self._probe(frozenset(election.promises))
                    if found:
                        family = config_union(family, found)
                        continue
                for members in election.degraded():
                    _log.warning(
                        "partition %d: a majority of %s lost its memory (restarted without "
                        "data_dir, or downed: %s); adopting what the others remember, so "
                        "writes only the lost members held are gone", p, list(members),
                        sorted(election.lost & set(members)) or "restarted")
                plan = election.plan(ctx.name)
                if await self._install(election, plan):
                    await self._outwait_leases(election, answered)
                    return Won(election.epoch, self.target, election.config, plan, self.rounds)
                break
            else:
                raise NoQuorum(f"partition {p}: the replicas kept reporting new configs "
                               f"after {s.election_rounds} rounds", definite=True)
        raise NoQuorum(f"partition {p}: other candidates kept winning promises "
                       f"({s.election_attempts} attempts)", definite=True)

    async def _outwait_leases(self, election: Election, answered: float) -> None:
        """Serve only once no earlier leader can still answer a read from its memory.

        A promiser reports the leader it acknowledged last while that leader's read
        lease may run (``Promise.served_by``, ``lease_left``). A leader that promised
        this epoch has stepped down as it did. One that was not asked (outside the sets,
        or not in this node's view a moment ago) is asked now, with the same prepare:
        any answer, a promise or a refusal, means it no longer leads at the epoch it
        served (a node steps down when it promises a newer one). For one that does not
        answer (dead, paused, cut off) the new leader waits until its lease is over,
        counted from when the promises were in (``answered``, after the replicas
        measured). A failover usually waits nothing: detecting a dead leader takes
        longer than the lease."""
        ctx, p = self.ctx, self.partition
        promisers = election.promises
        leases: dict[str, float] = {}
        for promise in promisers.values():
            node = promise.served_by.rpartition("#")[0]
            if promise.lease_left > 0 and node not in promisers:
                leases[node] = max(leases.get(node, 0.0), promise.lease_left)
        if not leases:
            return
        ask = Prepare(p, election.epoch, ())

        def feed(node: str, fut: asyncio.Future[Any]) -> None:
            if isinstance(result_of(fut), Promise):
                leases.pop(node, None)

        # Asked again while the lease runs if every ask failed at once: right after a
        # heal a connection may be replaced, or the node missing from the view a moment.
        while leases and (left := answered + max(leases.values())
                          - ctx.clock.monotonic()) > 0:
            alive = ctx.alive()
            waits = [(node, ctx.sender.send(node, ask)) for node in leases if node in alive]
            if waits:
                verdict = deciding(waits, feed, lambda: not leases)
                timer = ctx.tasks.spawn(ctx.clock.sleep(left), name=f"lease-{p}")
                await asyncio.wait([verdict, timer], return_when=asyncio.FIRST_COMPLETED)
                timer.cancel()
                if not leases or not verdict.done():
                    break  # answered, or the lease is over
            await ctx.clock.sleep(min(left, _LEASE_ASK_S))
        wait = answered + max(leases.values(), default=0.0) - ctx.clock.monotonic()
        if wait > 0:
            _log.debug("partition %d: waiting %.3f s for the read lease of %s, which did "
                       "not answer epoch %s", p, wait, sorted(leases), election.epoch)
            await ctx.clock.sleep(wait)

    async def feasible(self) -> bool:
        """A pre-vote: would a prepare round reach its quorum now? Asks every member of
        the sets the election would ask, and of the sets their answers name, with a
        read-only ``Probe`` (nobody promises, so nobody is deposed or fenced), and
        answers ``False`` only when too few of some required set are alive in this
        node's view and answering (the round would be ``impossible``).

        Why: a prepare promises even when the round then fails, and every promise
        deposes the leader the promiser followed and records a pending set the next
        candidate must satisfy. Right after a heal the healed node sees some members
        before others (and before they see it); its background elections on that
        partial table failed and took the partitions' working leaders down with them,
        so writes waited until the views agreed (docs/design/replication.md, "Background
        elections ask first"). Elections a call waits for do not ask first: they must
        run, and a failure there is the caller's to see."""
        ctx, p = self.ctx, self.partition
        config = config_union((self.target,), self.extra)
        alive, lost = ctx.alive(), ctx.lost()
        mine = ctx.store.probe(Probe(p))
        named = config_members(config_union(config_union(config, mine.config), mine.pending))
        if named <= alive | lost:
            # Everyone this node knows the partition by is alive in its view: the round
            # can fail only on answers, which the prepare learns as fast (a fresh
            # cluster's elections pay no extra round trip).
            return True
        known: dict[str, Known] = {}
        failed: set[str] = set()
        for _ in range(ctx.settings.election_rounds):
            election = Election(p, ZERO_EPOCH, self.target, config)
            waits: list[tuple[str, asyncio.Future[Any]]] = []
            for member in sorted(election.members()):
                if member in known or member in failed:
                    pass
                elif member == ctx.name:
                    known[member] = ctx.store.probe(Probe(p))
                elif member in alive:
                    waits.append((member, ctx.sender.send(member, Probe(p))))
                elif member not in lost:
                    failed.add(member)

            def feed(node: str, fut: asyncio.Future[Any]) -> None:
                reply = result_of(fut)
                if isinstance(reply, Known):
                    known[node] = reply
                else:
                    failed.add(node)

            await decide(waits, feed, lambda: False)
            for member in election.members():
                if member in known:
                    k = known[member]
                    election.reply(member, Promise(p, True, k.promised, k.marked, k.config,
                                                   k.pending, k.synced, (), k.amnesiac))
                elif member in failed:
                    election.fail(member)
                else:
                    election.lose(member)
            status = election.status()
            if status != "discover":
                return status != "impossible"
            config = config_union(config, election.discovered())
        return True

    async def _prepare(self, election: Election) -> None:
        """Step 2: ask every member of every required set for a promise."""
        ctx = self.ctx
        item = Prepare(election.partition, election.epoch, election.config)
        alive, lost = ctx.alive(), ctx.lost()
        waits: list[tuple[str, asyncio.Future[Any]]] = []
        for member in sorted(election.members()):
            if member == ctx.name:
                reply = ctx.store.prepare(item)
                await ctx.persist()
                election.reply(member, reply)
            elif member in alive:
                waits.append((member, ctx.sender.send(member, item)))
            elif member in lost:
                election.lose(member)
            else:
                election.fail(member)

        def feed(node: str, fut: asyncio.Future[Any]) -> None:
            reply = result_of(fut)
            if isinstance(reply, Promise):
                ctx.note_promise(node, reply)
                election.reply(node, reply)
            else:
                election.fail(node)

        await decide(waits, feed, lambda: election.status() != "pending")

    async def _probe(self, asked: frozenset[str]) -> Config:
        """Step 5: ask every alive member that did not promise what it knows of the
        partition (a silent member of a required set may hold it too)."""
        ctx, p = self.ctx, self.partition
        others = sorted(ctx.alive() - asked - {ctx.name})
        waits = [(m, ctx.sender.send(m, Probe(p))) for m in others]
        found: Config = ()
        failed: list[str] = []

        def feed(node: str, fut: asyncio.Future[Any]) -> None:
            nonlocal found
            reply = result_of(fut)
            if isinstance(reply, Known):
                found = config_union(config_union(found, reply.config), reply.pending)
            else:
                failed.append(node)

        await decide(waits, feed, lambda: False)
        if failed and not found:
            raise NoQuorum(f"partition {p} looks new, but {failed} did not answer the probe "
                           "(they might hold it)", definite=True)
        return found

    async def _install(self, election: Election, plan: Plan) -> bool:
        """Steps 7-9: catch up and mark a majority of the new set, release the old
        replicas. ``False`` if a newer epoch fenced this one meanwhile."""
        ctx, p, epoch, target = self.ctx, election.partition, election.epoch, self.target
        mark = Mark(p, epoch, (target,))
        marked = Quorum((target,))
        alive = ctx.alive()
        waits: list[tuple[str, asyncio.Future[Any]]] = []
        for member in target:
            if member != ctx.name and member not in alive:
                marked.fail(member)
                continue
            items = [] if member in plan.holding else self._chunks(
                election.config, epoch, plan.entries_for(member))
            if member == ctx.name:
                waits.append((member, done_future(await self._catch_up_local(items, mark))))
            else:
                # Every reachable member is caught up and marked, also those answering
                # after the majority: an unmarked replica would stay unsynced.
                waits.append((member, ctx.tasks.spawn(self._catch_up(member, items, mark),
                                                      name=f"catch-up-{p}-{member}")))
        await decide(waits, partial(feed_quorum, marked), lambda: marked.status != "pending")
        status = marked.status
        if status == "fenced":
            assert marked.fenced_by is not None
            ctx.note_seen(p, marked.fenced_by)
            return False
        if status != "done":
            raise NoQuorum(f"partition {p}: epoch {epoch} could not reach a majority of the "
                           f"new replica set (acked: {sorted(marked.acked)}, failed: "
                           f"{sorted(marked.failed)})", definite=True)
        # Release: the old replicas drop their copy now that a majority of the new set
        # confirmed it. Best effort: a dead or slow one keeps a harmless stale copy.
        for member in sorted(config_members(election.config) - set(target)):
            if member in alive:
                ctx.sender.send(member, mark).add_done_callback(retrieve)
        return True

    def _chunks(self, config: Config, epoch: Epoch, entries: list[WireEntry]) -> list[Accept]:
        budget = self.ctx.settings.batch_max_bytes // 2
        p = self.partition
        chunks: list[Accept] = []
        current: list[WireEntry] = []
        size = 0
        for wire in entries:
            esize = wire[2].size()
            if current and size + esize > budget:
                chunks.append(Accept(p, epoch, config, tuple(current), True))
                current, size = [], 0
            current.append(wire)
            size += esize
        chunks.append(Accept(p, epoch, config, tuple(current), True))
        return chunks

    async def _catch_up_local(self, items: list[Accept], mark: Mark) -> Reply:
        store = self.ctx.store
        replies: list[Reply] = [store.accept(i) for i in items]
        first = worst(replies) if replies else None
        if first is None or (isinstance(first, Ack) and first.ok):
            first = store.mark(mark)
        await self.ctx.persist()
        return first

    async def _catch_up(self, member: str, items: list[Accept], mark: Mark) -> Reply:
        """Send ``member`` what it lacks, then mark it. Returns the first refusal, else
        the mark's ack; a failure comes back as a refusal with reason ``failed``."""
        send = self.ctx.sender.send
        try:
            if items:
                replies = await asyncio.gather(*(send(member, i, item_size(i)) for i in items),
                                               return_exceptions=True)
                for reply in replies:
                    if isinstance(reply, BaseException):
                        raise reply
                first = worst([r for r in replies if not isinstance(r, BaseException)])
                if not (isinstance(first, Ack) and first.ok):
                    return first
            return await send(member, mark)
        except PhoenixError as exc:
            _log.debug("catch-up of %s for partition %d failed: %s", member, mark.partition,
                       exc.message)
            return Ack(mark.partition, False, mark.epoch, "failed")
