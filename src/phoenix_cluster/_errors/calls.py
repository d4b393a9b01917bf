"""Errors of calling an agent: the call, its arguments, and the nodes and links it crosses.

Definite ones say the call did not run (an unknown agent or method, a handler that
raised and was rolled back, a refusal by an interceptor or a full mailbox, arguments that
cannot travel, a call cycle, a peer that failed authentication or sent garbage, this node
closing); :class:`CallTimeout` and :class:`NodeUnavailable` say it may have.
Imported from ``phoenix_cluster.errors``.
"""

from __future__ import annotations

import traceback

from .base import DefiniteError, IndefiniteError

__all__ = [
    "AgentError",
    "AgentNotFound",
    "AuthenticationError",
    "CallCycle",
    "CallRejected",
    "CallTimeout",
    "NodeClosed",
    "NodeUnavailable",
    "Overloaded",
    "ProtocolError",
    "SerializationError",
]


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
