"""The state store protocol: versioned rows of agent state, written conditionally.

A row per agent (kind, key) holds its encoded state, the row's *version* (1 after the
first write, +1 per write) and the kind's ``state_version`` that wrote it. Every write
names the version it expects to replace (``0``: no row yet) and fails with
:class:`~phoenix_cluster.errors.WriteConflict` when the stored one differs: optimistic
concurrency, so two activations of one agent can never both commit (the second one
read an older version, or wrote from the same one and lost the race).

Event-sourced kinds use the same row as their snapshot and an append-only log of events
numbered 1, 2, ... per agent; appending events numbered ``expected + 1 ...`` fails with
``WriteConflict`` when any of those numbers is taken, so their log has one writer too.

Errors: :class:`~phoenix_cluster.errors.StoreUnavailable` when the store cannot be used
(``definite`` says whether the write may have landed), ``WriteConflict`` as above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ..errors import WriteConflict

__all__ = ["StateStore", "StoredEvents", "StoredState", "write_conflict"]


class StoredState(msgspec.Struct, frozen=True):
    """One agent's row in a state store.

    Attributes:
        version: the row's version, 1 after the first write and +1 per write (for an
            event-sourced kind: the number of the last event the snapshot includes).
        state_version: the kind's ``state_version`` when the row was written.
        data: the encoded state (opaque to the store).
    """

    version: int
    state_version: int
    data: bytes


class StoredEvents(msgspec.Struct, frozen=True):
    """An event-sourced agent as stored: its newest snapshot and the events after it.

    Attributes:
        snapshot: the snapshot row (``None``: no snapshot yet, replay from event 1).
        events: the encoded events numbered after the snapshot's ``version``, in order.
    """

    snapshot: StoredState | None
    events: tuple[bytes, ...]

    @property
    def version(self) -> int:
        """The number of the last event stored (``0``: none)."""
        return (0 if self.snapshot is None else self.snapshot.version) + len(self.events)


@runtime_checkable
class StateStore(Protocol):
    """What Phoenix asks of a state store. Implement it to keep agent state anywhere;
    :class:`~phoenix_cluster.SqliteStore` and :class:`~phoenix_cluster.PostgresStore`
    are the ones built in. Every method may raise ``StoreUnavailable``; none may leave a
    partial write behind (each write is one transaction)."""

    async def read(self, kind: str, key: str) -> StoredState | None:
        """The agent's row (``None``: never written)."""
        ...

    async def write(self, kind: str, key: str, data: bytes, *, state_version: int,
                    expected: int) -> int:
        """Replace the row whose version is ``expected`` (``0``: create it).

        Returns:
            The new version, ``expected + 1``.

        Raises:
            WriteConflict: the stored version is not ``expected``; nothing was written.
        """
        ...

    async def read_events(self, kind: str, key: str) -> StoredEvents:
        """An event-sourced agent's newest snapshot and the events after it."""
        ...

    async def append(self, kind: str, key: str, events: Sequence[bytes], *, expected: int,
                     snapshot: bytes | None = None, state_version: int = 1) -> int:
        """Append ``events`` as numbers ``expected + 1 ...``, with ``snapshot`` (the
        state after the last of them) as the snapshot row when given, in one transaction.

        Returns:
            The number of the last event, ``expected + len(events)``.

        Raises:
            WriteConflict: one of those numbers is taken; nothing was written.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and files; the store is not used afterwards."""
        ...


def write_conflict(kind: str, key: str, expected: int) -> WriteConflict:
    """The error of a conditional write that found another version than ``expected``."""
    return WriteConflict(f"{kind}/{key}: the store holds another version than {expected} "
                         "(another activation committed first); nothing was written")
