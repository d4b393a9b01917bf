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

The classes live in ``_errors/`` by family (``base``, ``calls``, ``state``,
``coordination``); this module is where they are imported from, and names them.
"""

from __future__ import annotations

from ._errors.base import (
    ConfigError,
    DefiniteError,
    IndefiniteError,
    PhoenixError,
    PhoenixInternalError,
)
from ._errors.calls import (
    AgentError,
    AgentNotFound,
    AuthenticationError,
    CallCycle,
    CallRejected,
    CallTimeout,
    NodeClosed,
    NodeUnavailable,
    Overloaded,
    ProtocolError,
    SerializationError,
)
from ._errors.coordination import (
    BarrierMismatch,
    LeaseHeld,
    NoBids,
    NotHolder,
    NotIdempotent,
    SagaAborted,
    SemaphoreMismatch,
    StaleToken,
)
from ._errors.state import (
    NameTaken,
    NoQuorum,
    NotLeader,
    StateVersionError,
    StorageError,
    StoreUnavailable,
    WriteConflict,
)

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


# Tracebacks, reprs and docs name the public module, where every error is imported from.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
