"""Routing answers shared by the caller side, the router and remote casts: ``PLACE``
(the home must choose a host first), and when a message turned away by a changing
partition is routed again, and how soon.

A partition changes hands on a join, a leave or a failover. A call that reaches the old
host or a leader still being elected is refused before it runs (definite), so the sender
may route it again: the caller side (``runtime.py``), the router (``dispatch.py``) and
remote casts (``remote_cast.py``) share these rules. Imports nothing of the agent layer.
"""

from __future__ import annotations

from typing import Final

from ..errors import NodeClosed, NodeUnavailable, NoQuorum, NotLeader, PhoenixError

__all__ = ["PLACE", "Place", "reroute_delay", "resend_elsewhere", "resend_local",
           "turned_away", "turned_away_by_peer"]


class Place:
    """The type of :data:`PLACE`."""

    def __repr__(self) -> str:
        return "PLACE"


PLACE: Final = Place()
"""Routing answer: the home must choose a host first (an async step)."""

def turned_away(exc: BaseException) -> bool:
    """Whether a call failed without running because its agent's partition is changing
    hands: its old host stopped it (``NotLeader``) or its new leader is still being
    elected (``NoQuorum``), both definite. Routing it again shortly is safe."""
    return isinstance(exc, NotLeader | NoQuorum) and exc.definite


def turned_away_by_peer(exc: BaseException) -> bool:
    """:func:`turned_away`, or the peer is shutting down (``NodeClosed``, definite: it
    ran nothing and its keys belong to others now). For answers from other nodes only:
    a node's own ``NodeClosed`` means its caller is shutting down too."""
    return turned_away(exc) or isinstance(exc, NodeClosed)


def resend_elsewhere(exc: PhoenixError) -> bool:
    """For answers from other nodes: whether a call is sent again, with the same request
    id, to its key's owner in a fresh view (within the call's deadline). That is
    :func:`turned_away_by_peer`, and two more cases:

    - the owner lost its lead or its quorum while it committed the call's change
      (``NotLeader`` or ``NoQuorum``, indefinite): the change may be stored. The reply
      window is committed with the change (``dedup.py``), so the next leader answers the
      resend from it if the change was adopted, and runs it if not: at most once;
    - the owner could not reach a node it needed before it ran anything (a definite
      ``NodeUnavailable``: a previous holder that did not answer its release while a
      partition changes hands, or a connection reset as a peer comes back).
    """
    return (turned_away_by_peer(exc) or isinstance(exc, NotLeader | NoQuorum)
            or (isinstance(exc, NodeUnavailable) and exc.definite))


def reroute_delay(attempt: int, remaining_s: float) -> float | None:
    """Backoff before the ``attempt``-th re-route of a message that did not run (turned
    away, or redirected round a loop while the views converge): 20 ms doubling, at most
    0.5 s. ``None`` when the message's ``remaining_s`` cannot cover it: the caller then
    raises what turned the message away. A call keeps being routed until its deadline,
    because a partition changing hands (a join, a leave, a failover) takes longer on a
    loaded machine than any fixed number of tries covers."""
    delay = min(0.02 * 2.0 ** attempt, 0.5)
    return delay if delay < remaining_s else None


def resend_local(exc: PhoenixError, remembered: bool) -> bool:
    """For a call queued on this node: whether it is sent again with its request id
    (within its deadline). :func:`turned_away`; a definite ``NodeUnavailable`` (a
    previous holder did not answer its release: nothing ran); and, when the call was
    in its agent's reply window (``remembered``), a commit fenced or cut from its quorum
    (``NotLeader`` / ``NoQuorum``, indefinite): the window was committed with the
    change, so the next leader answers from it if the change was kept. Not
    ``NodeClosed``: here it means this node, the caller's, is shutting down."""
    if isinstance(exc, NotLeader | NoQuorum):
        return exc.definite or remembered
    return isinstance(exc, NodeUnavailable) and exc.definite
