"""Errors of agents' state and the cluster that keeps it: quorum, leadership, stores.

Replication refuses a write without a quorum (:class:`NoQuorum`) or from a node that
does not lead the key's partition (:class:`NotLeader`); the durable replica store and
external state stores report what they cannot do (:class:`StorageError`,
:class:`WriteConflict`, :class:`StateVersionError`, :class:`StoreUnavailable`); the
registry refuses a name that is taken (:class:`NameTaken`). Imported from
``phoenix_cluster.errors``.
"""

from __future__ import annotations

from .base import DefiniteError, IndefiniteError

__all__ = [
    "NameTaken",
    "NoQuorum",
    "NotLeader",
    "StateVersionError",
    "StorageError",
    "StoreUnavailable",
    "WriteConflict",
]


class NoQuorum(DefiniteError):
    """Too few replicas of the agent's partition are reachable to commit a write."""

    code = "no_quorum"


class NotLeader(DefiniteError):
    """This node does not lead the partition of the agent's key, or lost the lead.

    You get it from the replication layer: when a node that is not in the key's replica
    set tries to serve it, and when a write meets a replica that promised a newer
    leader (the writer is *fenced*). Before a write left the node it is definite; once
    a write may have reached a replica it is indefinite (``definite=False``): a later
    leader may adopt it. The runtime rolls the agent back and routes to the new leader.

    Attributes:
        partition: the partition (``-1`` when unknown).
    """

    code = "not_leader"

    def __init__(
        self,
        message: str = "",
        *,
        partition: int = -1,
        definite: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.partition = partition


class NameTaken(DefiniteError):
    """The name is already registered (``node.registry.register``) to another agent or
    value; nothing was registered. Unregister it first, or pick another name."""

    code = "name_taken"


class StorageError(DefiniteError):
    """The durable replica store (``data_dir``) cannot be used.

    Raised at start for a file that is not SQLite, is corrupt, has another schema
    version, or belongs to another cluster or node (the message names the file, what
    was expected and what was found), and for a write that failed (disk full, I/O).
    A node never treats a bad file as empty: move it away or fix ``data_dir``.
    """

    code = "storage_error"


class WriteConflict(DefiniteError):
    """A conditional write to a state store lost: the stored version is not the one this
    activation read, so another activation of the same agent committed first (or still
    runs). Nothing was written; the activation stops, and the agent's next message
    activates it again from the store's newest state."""

    code = "write_conflict"


class StateVersionError(DefiniteError):
    """Stored state has a ``state_version`` this code cannot read: older, with no
    ``upgrade_state`` hook on the kind, or newer than the kind's ``state_version`` (a
    newer release wrote it). The message names the kind, the key and both versions;
    the agent does not activate and nothing is written."""

    code = "state_version_error"


class StoreUnavailable(IndefiniteError):
    """The agent's state store (``store=`` of its kind: a database) could not be used.

    ``definite=True`` when nothing was written: the store was not reachable, or the
    write's transaction failed before its commit was sent (the database rolls it back).
    ``definite=False`` only when the connection broke while the commit itself was in
    flight. Calls succeed again once the store is back; nothing needs restarting.
    """

    code = "store_unavailable"
