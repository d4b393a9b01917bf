"""Background moves: agents follow their home after a join, a leaving node hands off
everything, and policy-placed agents spread out when one node holds too many.

Every move is a migration (``docs/design/migration.md``): no message lost or run twice.
Moves are rate-limited (``rate`` per second, ``concurrency`` at a time) so rebalancing
never starves the messages the node is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._foundation.env import Clock
from ..errors import PhoenixError
from .handoff import Claim
from .kinds import KindSpec

if TYPE_CHECKING:
    from .placement import PlacementService
    from .runtime import AgentRuntime

__all__ = ["Rebalancer"]

_log = logging.getLogger("phoenix_cluster.rebalance")


class Rebalancer:
    """Moves agents in the background (one per node, run under the node's supervisor).

    Args:
        runtime: the node's agents.
        placement: homes, pins and migration.
        clock: the node's clock.
        changed: set after each table change (the placement service's ``on_change``).
        rate: moves per second at most.
        concurrency: moves in flight at most.
        tolerance: a node holding more than ``1 + tolerance`` times the mean of
            policy-placed agents sheds the excess to the least loaded member.
        interval_s: how often the load pass runs.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        placement: PlacementService,
        clock: Clock,
        changed: asyncio.Event,
        *,
        rate: float = 1000.0,
        concurrency: int = 32,
        tolerance: float = 0.25,
        interval_s: float = 5.0,
    ) -> None:
        self.runtime = runtime
        self.placement = placement
        self.clock = clock
        self.rate = rate
        self.concurrency = concurrency
        self.tolerance = tolerance
        self.interval_s = interval_s
        self._changed = changed
        self.moved = 0
        self.failed = 0
        self._unsure = False
        """The last :meth:`follow_homes` left agents whose home never answered a poll:
        the next tick looks again."""

    async def run(self) -> None:
        """Forever: after each table change move agents to their homes; every
        ``interval_s`` even out policy-placed agents and send stand-ins home."""
        while True:
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._changed.wait()
            except TimeoutError:
                if self._unsure:
                    await self.follow_homes()
                await self.balance_load()
                await self.return_stand_ins()
                continue
            self._changed.clear()
            await self.follow_homes()

    def _held(self) -> Iterator[tuple[KindSpec, str]]:
        for kr in list(self.runtime._kinds.values()):
            if kr.workers:
                continue  # stateless workers serve where they are; nothing to move
            for key in [*kr.activations, *kr.passive]:
                yield kr.spec, key

    async def follow_homes(self) -> int:
        """Move every unpinned hash agent held here whose home is another node; re-pin
        pinned agents at their (possibly new) home. Returns how many moved."""
        placement = self.placement
        members, directory = placement.members, placement.directory
        me = placement.self_name
        moves: list[tuple[KindSpec, str, str]] = []
        upgrades: list[tuple[KindSpec, str, str]] = []
        self._unsure = False
        stand_ins: list[str] = []  # new ones, for the log
        if placement.rpc is not None:
            with contextlib.suppress(PhoenixError):
                await members.loads()  # the members' kinds and versions, as of now
        for spec, key in self._held():
            home = placement.home(spec.name, key)
            if home is None:
                continue
            if spec.hashed and not placement.leaving and members.outdated(spec.name):
                # Members of a newer application version host this kind: hand it over.
                to = await members.upgrade_target(spec, key)
                if to is not None and to != me:
                    upgrades.append((spec, key, to))
                    continue
            if home == me:
                continue
            k = (spec.name, key)
            home_hosts = True if not spec.hashed else await members.home_hosts(spec.name, home)
            if home_hosts is None and not placement.leaving:
                # The home never answered a poll (just back after a cut, or busy): not
                # known to lack the kind, so no reason to stand in for it. The agent
                # stays as it is (an unpinned one is pulled by its home at the first
                # call there); the next tick looks again.
                self._unsure = True
                if k in directory.pinned_here:
                    await self._repin(spec, key, home, stand_in=k in directory.stand_in)
                continue
            if k in directory.pinned_here or not home_hosts:
                if not placement.leaving and (k not in directory.stand_in or not home_hosts):
                    # Pinned here, or a hash agent whose new home lacks its kind: it
                    # stays, registered with the home (as its stand-in).
                    if not home_hosts and k not in directory.stand_in:
                        stand_ins.append(f"{spec.name}/{key} (home {home})")
                    await self._repin(spec, key, home, stand_in=not home_hosts)
                    continue
                if not spec.hashed or not home_hosts:
                    # Leaving with its node: its home places it again.
                    home = await self._new_host(spec, key, home)
            moves.append((spec, key, home))
        if stand_ins:  # one line per pass: an operator sees why agents stay here
            _log.info("standing in for %d agents whose homes do not report hosting their "
                      "kinds, e.g. %s", len(stand_ins), stand_ins[0])
        moved = await self._move(moves, "leave" if placement.leaving else "join")
        return moved + await self._move(upgrades, "upgrade")

    async def return_stand_ins(self) -> int:
        """Move every agent this node stands in for to its home once the home reports
        hosting the kind. The pass after a table change decides on the loads polled then;
        a member that just (re)joined with the kind's module may not have answered that
        poll, and without this its share would stay here until the next change."""
        placement = self.placement
        stand_in = placement.directory.stand_in
        if not stand_in or placement.leaving:
            return 0
        moves: list[tuple[KindSpec, str, str]] = []
        for spec, key in self._held():
            home = placement.home(spec.name, key)
            if ((spec.name, key) in stand_in and home is not None
                    and home != placement.self_name
                    and await placement.members.home_hosts(spec.name, home)):
                moves.append((spec, key, home))
        return await self._move(moves, "join")

    async def _repin(self, spec: KindSpec, key: str, home: str, *, stand_in: bool) -> None:
        directory = self.placement.directory
        try:
            await directory.claim(home, Claim(spec.name, key, directory.self_name, force=True))
            if stand_in:
                k = (spec.name, key)
                directory.pinned_here.add(k)
                directory.proxied.add(k)
                directory.stand_in.add(k)
        except PhoenixError as exc:
            _log.info("could not register %s/%s with its home %s: %s", spec.name, key, home,
                      exc.message)

    async def _new_host(self, spec: KindSpec, key: str, home: str) -> str:
        loads = await self.placement.members.loads()
        others = sorted((n for n in loads.values()
                         if n.name != self.placement.self_name and n.hosts(spec.name)),
                        key=lambda n: (n.active_agents, n.name))
        return others[0].name if others else home

    async def balance_load(self) -> int:
        """Shed policy-placed agents to the least loaded member while this node holds
        more than ``1 + tolerance`` times the mean."""
        placement = self.placement
        mine = [(spec, key) for spec, key in self._held()
                if not spec.hashed and key in self.runtime._kinds[spec.name].activations]
        if not mine or len(placement.alive) < 2:
            return 0
        loads = await placement.members.loads()
        if len(loads) < 2:
            return 0
        mean = sum(n.active_agents for n in loads.values()) / len(loads)
        me = loads.get(placement.self_name)
        if me is None or me.active_agents <= mean * (1 + self.tolerance):
            return 0
        excess = int(me.active_agents - mean)
        target = min((n for n in loads.values() if n.name != placement.self_name),
                     key=lambda n: (n.active_agents, n.name))
        mine = [(spec, key) for spec, key in mine if target.hosts(spec.name)]
        room = int(mean - target.active_agents)
        count = max(0, min(excess, room, len(mine)))
        if count == 0:
            return 0
        # Idle agents first: moving them costs their callers nothing.
        acts = self.runtime._kinds
        mine.sort(key=lambda sk: acts[sk[0].name].activations[sk[1]].last_used)
        return await self._move([(s, k, target.name) for s, k in mine[:count]], "load")

    async def _move(self, moves: list[tuple[KindSpec, str, str]], reason: str) -> int:
        if not moves:
            return 0
        _log.info("moving %d agents (%s)", len(moves), reason)
        gate = asyncio.Semaphore(self.concurrency)
        interval = 1.0 / self.rate
        moved = 0
        failures: list[str] = []

        async def one(spec: KindSpec, key: str, to: str) -> None:
            nonlocal moved
            try:
                await self.placement.migrate(spec, key, to, reason=reason)
                moved += 1
            except PhoenixError as exc:
                self.failed += 1
                failures.append(f"{spec.name}/{key} to {to}: {exc.message}")
                _log.debug("move of %s/%s to %s failed: %s", spec.name, key, to, exc.message)
            finally:
                gate.release()

        async with asyncio.TaskGroup() as moving:  # the batch owns its moves
            for spec, key, to in moves:
                await gate.acquire()
                moving.create_task(one(spec, key, to))
                await self.clock.sleep(interval)
        self.moved += moved
        if failures:  # one line for the batch, not one per agent
            _log.info("moved %d of %d agents (%s); %d failed, e.g. %s", moved, len(moves),
                      reason, len(failures), failures[0])
        return moved
