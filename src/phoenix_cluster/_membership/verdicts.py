"""Verdicts that do not count: downed lives, and deaths declared by a node cut off.

Two kinds of news about a member are judged by who sent them rather than applied as
they are (``docs/design/membership.md``, "Stale verdicts"):

- a split-brain decision downs a member's life for good: its refutations (the same
  life, incarnations within :data:`SAME_LIFE` of the downed one) are refused, while a
  restarted process, a newer life, is welcome; and a decision taken by a member that was
  downed itself does not count (it decided on a partial view before it went);
- a death declared by a member this node holds dead, or held dead until lately, is
  *stale*: the declarer was cut off and judged the others from its side, so the verdict
  is taken as a suspicion and this node's own detector decides.

:class:`Verdicts` keeps what those judgements need: the downed lives and the members
that lately came back from dead. :class:`~.table.MemberTable` asks it before applying.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .messages import Update, UpdateStatus

__all__ = ["SAME_LIFE", "Verdicts"]

SAME_LIFE = 1_000
"""Incarnations within this distance above a downed one are the same process's life (its
refutations, +1 each); a restarted process starts at its start time in milliseconds,
seconds past any incarnation of a life that lived long enough to be downed."""

_LIVE = ("alive", "suspect")


class _Judged(Protocol):
    """What a verdict's declarer is judged by: its status and whether it was downed."""

    @property
    def status(self) -> UpdateStatus: ...

    @property
    def downed(self) -> bool: ...


class Verdicts:
    """The downed lives and the members back from dead, with the rules that read them."""

    __slots__ = ("back", "downed")

    def __init__(self) -> None:
        # name -> the incarnation at which a split-brain decision downed that life: its
        # refutations (same life) are refused; a new process (a newer life) is welcome.
        self.downed: dict[str, int] = {}
        self.back: dict[str, float] = {}
        """Members that came back from dead (a refutation after a cut or a pause), and
        when: their own death verdicts about others are stale for a while."""

    def is_downed(self, name: str, incarnation: int) -> bool:
        """Whether ``incarnation`` of ``name`` belongs to a life a decision downed."""
        downed = self.downed.get(name)
        return downed is not None and incarnation < downed + SAME_LIFE

    def by_downed(self, u: Update, members: Mapping[str, _Judged]) -> bool:
        """Whether the decision ``u`` was taken by a member that was downed itself: a
        node cut off from most of the cluster may decide on a partial view before it
        downs itself, and its verdicts must not take the majority down after a heal."""
        decider = members.get(u.by)
        return decider is not None and decider.downed

    def is_stale(self, u: Update, me: str, members: Mapping[str, _Judged], now: float,
                 longest_suspicion_s: float) -> bool:
        """Whether the death ``u`` was declared by a member this node holds dead, or
        held dead until lately (within the longest suspicion): its view was cut off."""
        if not u.by or u.by in (u.name, me):
            return False
        decider = members.get(u.by)
        if decider is None:
            return False
        if decider.status not in _LIVE:
            return True
        back = self.back.get(u.by)
        return back is not None and now - back < longest_suspicion_s

    def came_back(self, name: str, now: float) -> None:
        """``name`` was dead and is alive again (a refutation after a cut or a pause)."""
        self.back[name] = now

    def forget_back(self, horizon: float) -> None:
        """Forget the returns at or before ``horizon``."""
        for name, at in list(self.back.items()):
            if at <= horizon:
                del self.back[name]
