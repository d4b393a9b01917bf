"""Membership for nodes that do not gossip: pull the member table from a seed.

A client node that accepts no connections (no ``listen``) has no UDP endpoint to probe
from or be probed at. It still needs the member table to route each key straight to its
owner, so it asks a seed for the table with the same push-pull exchange members use,
sending an empty state of its own, and repeats that every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from .._foundation.env import Env
from ..errors import PhoenixError
from .messages import SyncState, decode_sync_state, encode_sync_state
from .service import SyncCall
from .snapshot import Member, MembershipSnapshot

__all__ = ["MembershipObserver"]

_log = logging.getLogger("phoenix_cluster.membership")


class MembershipObserver:
    """Keeps a :class:`MembershipSnapshot` fresh by pulling it from seeds.

    Args:
        name: this node's name (sent as the source of the empty state).
        seeds: TCP addresses to ask, tried in random order until one answers.
        sync: the push-pull call (address, state) -> state, as for the service.
        env: clock and randomness.
        interval_s: how often to refresh.
    """

    def __init__(self, name: str, seeds: Sequence[str], sync: SyncCall, *, env: Env,
                 interval_s: float = 0.5) -> None:
        self.name = name
        self._seeds = list(seeds)
        self._sync = sync
        self._env = env
        self._interval_s = interval_s
        self._snapshot = MembershipSnapshot(0, ())
        self._subscribers: list[Callable[[MembershipSnapshot], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.pulls = self.failures = 0

    def snapshot(self) -> MembershipSnapshot:
        return self._snapshot

    def subscribe(self, callback: Callable[[MembershipSnapshot], None]) -> None:
        self._subscribers.append(callback)

    async def start(self) -> None:
        """Pull once (so routing works at once if a seed answers), then keep refreshing."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="phx-observer")

    async def refresh(self) -> bool:
        """Pull the table from the first seed that answers; ``False`` if none did."""
        seeds = list(self._seeds)
        self._env.random.shuffle(seeds)
        empty = encode_sync_state(SyncState(self.name, ()))
        for seed in seeds:
            try:
                state = decode_sync_state(await self._sync(seed, empty))
            except (PhoenixError, OSError) as exc:
                self.failures += 1
                _log.debug("membership pull from %s failed: %s", seed, exc)
                continue
            self.pulls += 1
            members = tuple(
                Member(u.name, u.address, u.status, u.incarnation, u.role)
                for u in state.members
            )
            if members != self._snapshot.members:
                self._snapshot = MembershipSnapshot(self._snapshot.version + 1, members)
                for callback in self._subscribers:
                    callback(self._snapshot)
            return True
        return False

    async def _run(self) -> None:
        while True:
            await self._env.clock.sleep(self._interval_s)
            await self.refresh()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def __repr__(self) -> str:
        return f"<MembershipObserver {self.name} [{len(self._snapshot.members)} members]>"
