"""What the state-tracking property tests check at the end of each message
(``test_state_tracking.py``, ``test_list_tracking.py``)."""

from __future__ import annotations

import msgspec

import phoenix_cluster as phx
from phoenix_cluster._agents.tracking import StateTracker

encode = msgspec.msgpack.Encoder().encode


def full(agent: phx.Agent) -> bytes:
    """The plain path: the whole state's encoding."""
    return encode(agent.snapshot())


def end_message(tracker: StateTracker, agent: phx.Agent, committed: bytes,
                now: bytes | None, commit: bool) -> bytes:
    """Commit the message (``now``: the state's encoding) or roll it back, check the
    tracker against the plain path, and return the committed bytes: a commit's bytes
    are ``now``; a rollback returns exactly to ``committed`` and leaves nothing to
    collect."""
    if commit:
        assert now is not None
        change = tracker.collect(agent.__dict__)
        if change is None:
            assert now == committed
        else:
            assert change.state() == now
            tracker.accept(change)
            committed = now
        assert tracker.state() == committed
    else:
        tracker.rollback(agent.__dict__)
        assert full(agent) == committed
        assert tracker.collect(agent.__dict__) is None
    return committed
