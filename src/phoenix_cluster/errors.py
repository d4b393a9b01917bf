"""Every error Phoenix raises, split by whether the outcome is known.

    PhoenixError                      root: ``except phx.PhoenixError`` catches all of them
    ├── DefiniteError                 nothing happened; safe to retry or give up
    │   ├── AgentNotFound             unknown kind or method
    │   ├── AgentError                the handler raised; the agent's state was rolled back
    │   ├── CallRejected              a node's interceptor refused the call (indefinite once
    │   │                             the handler had run)
    │   ├── NoQuorum                  not enough replicas to commit
    │   ├── NotLeader                 this node does not (or no longer) lead the key's partition
    │   ├── StorageError              the durable replica store is corrupt, foreign or failing
    │   ├── WriteConflict             another activation committed the agent's state first
    │   ├── StateVersionError         stored state of a version this code cannot read
    │   ├── NameTaken                 the registry name is registered to something else
    │   ├── Overloaded                mailbox stayed full for the timeout; the message was refused
    │   ├── SerializationError        an argument or result cannot be encoded, has the wrong
    │   │                             type, or is over ``max_message_bytes``; nothing ran
    │   ├── AuthenticationError       the peer does not know the cluster secret
    │   ├── ProtocolError             malformed or oversized frame, wrong protocol version
    │   ├── NodeClosed                this node is shutting down and accepts no new work
    │   ├── LeaseHeld                 the lease (or every permit) is held by others
    │   ├── NotHolder                 renew/release by a caller that does not hold the lease
    │   ├── StaleToken                a fencing token older than one the resource has seen
    │   ├── SemaphoreMismatch         a semaphore used with another limit than its holders'
    │   ├── BarrierMismatch           a barrier awaited with another party count than its own
    │   ├── NotIdempotent             a saga step whose methods take no ``step_id``
    │   ├── SagaAborted               a saga step failed; every step that ran was compensated
    │   ├── NoBids                    no contractor bid for a task (or took the award)
    │   ├── CallCycle                 a call to an agent that waits, up the same chain of
    │   │                             calls, for this very call (it would never run)
    │   └── ConfigError (ValueError)  a setting has the wrong form
    ├── IndefiniteError               it may have happened; retry with the same request id
    │   ├── CallTimeout (TimeoutError)
    │   ├── NodeUnavailable           the node hosting the agent went away
    │   └── StoreUnavailable          the agent's state store (a database) cannot be reached
    └── PhoenixInternalError          a bug in Phoenix itself; please report it

Each error carries ``definite``. Where one name can go either way it is the truth:
``NodeUnavailable`` raised before a request left this node has ``definite=True``.
"When in doubt, indefinite is always safe."

Errors that cross the wire travel as a small ``(code, message, definite)`` record, never a
pickle; :func:`error_from_code` turns one back into the matching class.
"""

from __future__ import annotations

import traceback
from typing import ClassVar

__all__ = [
    "AgentError",
    "AgentNotFound",
    "AuthenticationError",
    "BarrierMismatch",
    "CallCycle",
    "CallRejected",
    "CallTimeout",
    "ConfigError",
    "DefiniteError",
    "IndefiniteError",
    "LeaseHeld",
    "NameTaken",
    "NoBids",
    "NoQuorum",
    "NodeClosed",
    "NodeUnavailable",
    "NotHolder",
    "NotIdempotent",
    "NotLeader",
    "Overloaded",
    "PhoenixError",
    "PhoenixInternalError",
    "ProtocolError",
    "SagaAborted",
    "SemaphoreMismatch",
    "SerializationError",
    "StaleToken",
    "StateVersionError",
    "StorageError",
    "StoreUnavailable",
    "WriteConflict",
    "error_from_code",
]


class PhoenixError(Exception):
    """Root of every Phoenix error.

    Attributes:
        definite: ``True`` when the operation certainly had no effect.
        request_id: the call's request id, when the error belongs to a call.
    """

    code: ClassVar[str] = "phoenix_error"
    default_definite: ClassVar[bool] = True

    def __init__(
        self,
        message: str = "",
        *,
        definite: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.definite = self.default_definite if definite is None else definite
        self.request_id = request_id


class DefiniteError(PhoenixError):
    """The operation did not happen. Retrying cannot apply it twice."""

    code = "definite"
    default_definite = True


class IndefiniteError(PhoenixError):
    """The operation may or may not have happened.

    Retry with the same request id: Phoenix runs a call at most once per id.
    """

    code = "indefinite"
    default_definite = False


class AgentNotFound(DefiniteError):
    """The agent kind or the method does not exist on the node that received the message.

    You get this for a typo in a method name, a private method (``_name``), or a kind whose
    module was not imported on the hosting node (``phx node --import MODULE``).
    """

    code = "agent_not_found"


class AgentError(DefiniteError):
    """The agent's handler raised an exception.

    The agent's state is what it was before this message: the handler's partial changes
    were rolled back. The original exception does not cross the wire; its type name,
    message and formatted traceback do.

    Attributes:
        remote_type: qualified name of the exception class the handler raised.
        remote_message: ``str()`` of that exception.
        remote_traceback: the formatted traceback text, from the hosting node.
    """

    code = "agent_error"

    def __init__(
        self,
        message: str = "",
        *,
        remote_type: str = "",
        remote_message: str = "",
        remote_traceback: str = "",
        definite: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self._remote_traceback = remote_traceback
        self._traceback_source: BaseException | None = None

    @property
    def remote_traceback(self) -> str:
        """The handler's formatted traceback, formatted on first read (it is costly)."""
        if not self._remote_traceback and self._traceback_source is not None:
            exc, self._traceback_source = self._traceback_source, None
            self._remote_traceback = "".join(traceback.format_exception(exc))
        return self._remote_traceback

    @classmethod
    def from_exception(cls, exc: BaseException, where: str) -> AgentError:
        """Wrap an exception raised at ``where``; its traceback is formatted only if read."""
        remote_type = type(exc).__qualname__
        if type(exc).__module__ != "builtins":
            remote_type = f"{type(exc).__module__}.{remote_type}"
        error = cls(
            f"{where} raised {remote_type}: {exc}",
            remote_type=remote_type,
            remote_message=str(exc),
        )
        error._traceback_source = exc
        return error


class CallRejected(DefiniteError):
    """An interceptor (``phx.Interceptor``) raised instead of passing the call on.

    ``definite`` is ``True`` when the call had not run (an outgoing interceptor refused it
    before it was sent, an incoming one before the handler); it is ``False`` when the
    interceptor raised after the call or handler ran (the agent's state was rolled back,
    but what the handler did elsewhere may have happened). The message names the node,
    the agent, and the exception the interceptor raised.
    """

    code = "call_rejected"


class NoQuorum(DefiniteError):
    """Too few replicas of the agent's partition are reachable to commit a write."""

    code = "no_quorum"


class NameTaken(DefiniteError):
    """The name is already registered (``node.registry.register``) to another agent or
    value; nothing was registered. Unregister it first, or pick another name."""

    code = "name_taken"


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


class Overloaded(DefiniteError):
    """The message was refused to protect the node, and nothing was queued.

    You get it when an agent's mailbox stayed at ``mailbox_limit`` for the whole timeout
    of the call or cast (a message to a full mailbox first waits for room), or when a
    connection's send queue or a node's inbound slots stayed full. Back off and retry;
    Phoenix never drops an accepted message without saying so (see
    ``phoenix_messages_dropped_total``).
    """

    code = "overloaded"


class SerializationError(DefiniteError):
    """A message's argument or result cannot travel: nothing ran, nothing was sent.

    You get it when an argument (or a handler's result) cannot be encoded as msgpack,
    does not match its annotation (``by: int`` given ``"5"``: every annotated parameter
    and return type is checked with msgspec), or when the encoded arguments or result
    are larger than ``max_message_bytes``. The check is the same on an embedded node
    and on a cluster. For a result, the handler's state changes were rolled back.
    Fix the call; retrying it unchanged fails the same way.

    Attributes:
        kind: the agent kind (``""`` when the error came from another node).
        method: the method name (``""`` when the error came from another node).
        argument: the parameter's name, ``"return value"``, or ``""`` when the whole
            message is concerned (its size). The message names all three either way.
    """

    code = "serialization_error"

    def __init__(
        self,
        message: str = "",
        *,
        kind: str = "",
        method: str = "",
        argument: str = "",
        definite: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.kind = kind
        self.method = method
        self.argument = argument


class AuthenticationError(DefiniteError):
    """The peer failed the cluster-secret challenge (or we did, from its point of view)."""

    code = "authentication_error"


class ProtocolError(DefiniteError):
    """A frame was malformed, oversized, or spoke an unsupported protocol version."""

    code = "protocol_error"


class NodeClosed(DefiniteError):
    """This node is shutting down (or shut down) and takes no new work.

    You get :class:`NodeUnavailable` instead when the *remote* node went away.
    """

    code = "node_closed"


class LeaseHeld(DefiniteError):
    """The lease is held by someone else (for a semaphore: every permit is held), and
    stayed so for as long as the caller was willing to wait; nothing was acquired.

    Attributes:
        holders: the holders at the last attempt (may be empty in a message that
            crossed the wire).
    """

    code = "lease_held"

    def __init__(self, message: str = "", *, holders: list[str] | None = None,
                 definite: bool | None = None, request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.holders = holders or []


class NotHolder(DefiniteError):
    """A renewal or release came from a caller that does not hold the lease with that
    token (it never did, its lease expired, or a later token was issued); nothing
    changed. A holder that gets this has lost the lease and must stop acting on it."""

    code = "not_holder"


class StaleToken(DefiniteError):
    """A fenced resource refused a fencing token older than the newest it has seen:
    the caller's lease was lost and someone else has held it since. Nothing was done."""

    code = "stale_token"


class SemaphoreMismatch(DefiniteError):
    """A semaphore was acquired with another ``limit`` than the one its current holders
    use; nothing was acquired. Every user of one semaphore name must pass one limit."""

    code = "semaphore_mismatch"


class BarrierMismatch(DefiniteError):
    """A barrier was awaited with another party count than the one its current round
    waits for; the caller was not counted. Every party of one barrier name must pass
    the same count."""

    code = "barrier_mismatch"


class NotIdempotent(DefiniteError):
    """A saga step's action or compensation takes no ``step_id`` argument, so it could
    not recognise being called again after a failover; the saga was not started."""

    code = "not_idempotent"


class SagaAborted(DefiniteError):
    """A saga step failed, and every step that had run was compensated: the saga's net
    effect is nothing (as far as the compensations undo their steps).

    Attributes:
        failure: which step failed and why.
    """

    code = "saga_aborted"

    def __init__(self, message: str = "", *, failure: str = "", definite: bool | None = None,
                 request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.failure = failure


class NoBids(DefiniteError):
    """No contractor bid for a task within the timeout, or every bidder refused the
    award; the task was not awarded to anyone."""

    code = "no_bids"


class CallCycle(DefiniteError):
    """A call to an agent whose handler is waiting, further up the same chain of calls,
    for this very call: A calls B, which calls A while A's handler waits for B. A runs
    one message at a time, so the call could never start; it fails at once instead of
    at its timeout. Nothing ran. Mark the waiting handler (or its kind) reentrant to
    let the call in (docs/reminders.md, "Reentrancy").

    Attributes:
        chain: the agents of the chain as ``kind/key``, outermost first, ending with the
            one called again (empty when the error crossed the wire: the message names
            them).
    """

    code = "call_cycle"

    def __init__(self, message: str = "", *, chain: tuple[str, ...] = (),
                 definite: bool | None = None, request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.chain = chain


class ConfigError(DefiniteError, ValueError):
    """A configuration value has the wrong form.

    Attributes:
        key: the setting's name, e.g. ``idle_timeout_s``.
    """

    code = "config_error"

    def __init__(self, message: str = "", *, key: str = "", definite: bool | None = None,
                 request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.key = key


class CallTimeout(IndefiniteError, TimeoutError):
    """The call outlived its timeout. The handler may still have run (or may run later).

    A call whose deadline passed before its handler started is skipped by the agent.
    """

    code = "call_timeout"


class NodeUnavailable(IndefiniteError):
    """The node that should handle the message cannot be reached or went away.

    ``definite`` is ``True`` when the request never left this node.
    """

    code = "node_unavailable"


class StoreUnavailable(IndefiniteError):
    """The agent's state store (``store=`` of its kind: a database) could not be used.

    ``definite=True`` when nothing was written: the store was not reachable, or the
    write's transaction failed before its commit was sent (the database rolls it back).
    ``definite=False`` only when the connection broke while the commit itself was in
    flight. Calls succeed again once the store is back; nothing needs restarting.
    """

    code = "store_unavailable"


class PhoenixInternalError(PhoenixError):
    """An invariant inside Phoenix broke. This is a bug in Phoenix: please report it."""

    code = "internal_error"
    default_definite = False


_BY_CODE: dict[str, type[PhoenixError]] = {
    cls.code: cls
    for cls in (
        PhoenixError,
        DefiniteError,
        IndefiniteError,
        AgentNotFound,
        AgentError,
        CallRejected,
        NoQuorum,
        NameTaken,
        NotLeader,
        StorageError,
        WriteConflict,
        StateVersionError,
        StoreUnavailable,
        Overloaded,
        SerializationError,
        AuthenticationError,
        ProtocolError,
        NodeClosed,
        LeaseHeld,
        NotHolder,
        StaleToken,
        SemaphoreMismatch,
        BarrierMismatch,
        NotIdempotent,
        CallCycle,
        SagaAborted,
        NoBids,
        ConfigError,
        CallTimeout,
        NodeUnavailable,
        PhoenixInternalError,
    )
}


def error_from_code(
    code: str, message: str, *, definite: bool | None = None, request_id: int | None = None
) -> PhoenixError:
    """Rebuild the error a peer reported as ``(code, message, definite)``.

    Unknown codes (a newer peer's, or a transport error a peer passed on, such as
    ``connection_broken``) become :class:`IndefiniteError` when the record says the
    call may have run (``definite=False``) and :class:`DefiniteError` otherwise (as a
    bare ``PhoenixError`` did, ``definite=None`` means definite), with the code in the
    message: the caller still learns whether the outcome is known.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        unknown = IndefiniteError if definite is False else DefiniteError
        return unknown(f"[{code}] {message}", definite=definite, request_id=request_id)
    return cls(message, definite=definite, request_id=request_id)
