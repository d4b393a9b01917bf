"""What the members can host: their kinds, application versions and loads.

Every member answers ``$placement.load`` with a :class:`NodeLoad`: the kinds whose code
it imported, its application version and how busy it is. This module polls them (at most
once a second), and answers the questions placement asks of them: does a member run a
kind at the newest version (``capability.py``), is this member outdated for a kind
during a rolling upgrade, where does an agent go once a newer version hosts its kind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec

from .._foundation.env import Clock
from .._placement.app_version import version_key
from .._placement.policies import NodeLoad
from .._transport.tasks import TaskSet
from ..errors import AgentNotFound, PhoenixError
from . import handoff as wire
from .agent import foreign_kind
from .capability import first_capable, newest_capable
from .home_table import HomeTable
from .kinds import KindSpec, find_kind, hosted_kinds, lookup_kind

__all__ = ["MemberLoads"]


class MemberLoads:
    """The hosting members' reports, polled, and the kinds this member hosts.

    Args:
        homes: the node's view of the members.
        client: calls the members' ``$placement`` service (``rpc`` ``None``: embedded).
        local_stats: ``(active agents, messages/s, loop lag s)`` of this node.
        tasks: owns the polls.
        app_version: the application version this member runs (rolling upgrades).
    """

    def __init__(self, homes: HomeTable, client: wire.PlacementClient,
                 local_stats: Callable[[], tuple[int, float, float]], tasks: TaskSet,
                 app_version: str = "") -> None:
        self.homes = homes
        self.client = client
        self.clock: Clock = homes.clock
        self.self_name = homes.self_name
        self.app_version = app_version
        self._version_key = version_key(app_version)
        self._local_stats = local_stats
        self._tasks = tasks
        self.excluded_kinds: frozenset[str] = frozenset()
        """Kinds defined in this process that this member does not host (nodes sharing
        one process in tests; a real member hosts every kind it imported)."""
        self._outdated: dict[str, bool] = {}
        """Per kind, from the last poll: a live member hosting it runs a newer
        application version than this one (new activations go there)."""
        self._loads: dict[str, NodeLoad] = {}
        self._reports: dict[str, NodeLoad] = {}
        """Every member's last answer, kept while it is away: a member back after a cut
        (or busy) that misses a poll keeps its kinds rather than seeming to host none."""
        self._loads_at = -1e18
        self._loads_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- this member

    def hosts(self, kind: str) -> bool:
        """Whether this member runs agents of ``kind``."""
        return find_kind(kind) is not None and kind not in self.excluded_kinds

    def spec_for(self, kind: str) -> KindSpec:
        """The spec of an inbound message's kind: a :func:`foreign_kind` stand-in when
        this member does not host it (it directs the agent to a member that does).

        Raises:
            AgentNotFound: an unknown kind on a node outside any cluster.
        """
        spec = find_kind(kind)
        if spec is not None and kind not in self.excluded_kinds:
            return spec
        if self.client.rpc is None:
            return lookup_kind(kind)
        return foreign_kind(kind)

    def local_load(self) -> NodeLoad:
        stats = self._local_stats()
        kinds = tuple(n for n in hosted_kinds() if n not in self.excluded_kinds)
        return NodeLoad(self.self_name, stats[0], stats[1], stats[2], kinds=kinds,
                        app_version=self.app_version)

    # ----------------------------------------------------------------- the members

    def view_changed(self) -> None:
        """Members joined or left: learn their kinds and versions before deciding where
        new activations go."""
        self._outdated.clear()
        ring = self.homes.ring
        if self.client.rpc is not None and ring is not None and len(ring) > 1:
            self.expire()
            self._tasks.spawn(self._refresh(), name="phx-placement-loads")

    def expire(self) -> None:
        """Poll again at the next :meth:`loads`."""
        self._loads_at = -1e18

    async def loads(self) -> dict[str, NodeLoad]:
        """Every hosting member's load, polled at most once a second."""
        if self.clock.monotonic() - self._loads_at > 1.0:
            task = self._loads_task
            if task is None or task.done():
                task = self._loads_task = self._tasks.spawn(self._poll(),
                                                             name="phx-placement-loads")
            await asyncio.shield(task)
        return self._loads

    async def _refresh(self) -> None:
        with contextlib.suppress(PhoenixError):
            await self.loads()

    async def _poll(self) -> None:
        async def one(name: str) -> NodeLoad | None:
            if name == self.self_name:
                return self.local_load()
            started = self.clock.monotonic()
            try:
                reply = await self.client.call(name, "load", b"", timeout_s=0.5)
            except PhoenixError:
                return None
            load = wire.decode(reply, NodeLoad)
            return msgspec.structs.replace(load, rtt_s=self.clock.monotonic() - started)

        names = sorted(self.homes.alive)
        results = await asyncio.gather(*(one(n) for n in names))
        reports = self._reports
        # A member too busy to answer in time, or just back after a cut, keeps its last
        # report rather than vanishing from the choice (which would send every new agent
        # elsewhere, and make its agents' holders stand in for a home that hosts them).
        loads: dict[str, NodeLoad] = {}
        for name, load in zip(names, results, strict=True):
            if load is not None:
                reports[name] = load
            known = reports.get(name)
            if known is not None:
                loads[name] = known
        self._loads = loads
        self._loads_at = self.clock.monotonic()
        self._outdated.clear()

    def outdated(self, kind: str) -> bool:
        """Whether a live member that hosts ``kind`` runs a newer application version
        than this one (from the last poll): new activations go there."""
        known = self._outdated.get(kind)
        if known is None:
            _, newest = newest_capable(self._loads, self.homes.alive, kind)
            known = self._outdated[kind] = newest > self._version_key
        return known

    async def upgrade_target(self, spec: KindSpec, key: str) -> str | None:
        """Where an agent goes when a newer application version hosts its kind: the
        first member of the newest version clockwise from its partition."""
        loads = await self.loads()
        ring = self.homes.ring
        if ring is None:
            return None
        try:
            return first_capable(ring, loads, self.homes.alive, spec.name, key)
        except AgentNotFound:
            return None

    async def home_hosts(self, kind: str, home: str) -> bool | None:
        """Whether member ``home`` runs ``kind`` itself: it reports hosting the kind, at
        the newest application version among the members that do (polled loads).
        ``None``: not known, ``home`` never answered a poll."""
        loads = await self.loads()
        if home == self.self_name:
            return self.hosts(kind) and not self.outdated(kind)
        load = loads.get(home)
        if load is None:
            return None
        if not load.hosts(kind):
            return False
        _, newest = newest_capable(loads, self.homes.alive, kind)
        return version_key(load.app_version) >= newest

    def standing_in(self, spec: KindSpec) -> KindSpec:
        """``spec``, or its :func:`foreign_kind` stand-in when this member does not host it."""
        return foreign_kind(spec.name) if spec.name in self.excluded_kinds else spec
