"""Typed errors to and from the wire: an :class:`~.messages.Error` record, never a
pickle. Used by every sender and receiver of agent messages and node-service calls."""

from __future__ import annotations

from ..errors import AgentError, NodeClosed, NodeUnavailable, PhoenixError, error_from_code
from .messages import Error

__all__ = ["error_frame", "error_from_frame"]


def error_frame(request_id: int, exc: PhoenixError) -> Error:
    """The wire record of ``exc`` (never a pickle)."""
    if isinstance(exc, AgentError):
        return Error(request_id, exc.code, exc.message, exc.definite,
                     exc.remote_type, exc.remote_traceback)
    return Error(request_id, exc.code, exc.message, exc.definite)


def error_from_frame(frame: Error) -> PhoenixError:
    """Rebuild the typed error a peer reported."""
    if frame.code == AgentError.code:
        return AgentError(frame.message, remote_type=frame.remote_type,
                          remote_message=frame.message, remote_traceback=frame.remote_traceback,
                          definite=frame.definite, request_id=frame.request_id)
    if frame.code == NodeClosed.code:
        # The owner is shutting down: for the caller that is a node it cannot use.
        return NodeUnavailable(f"the owner is shutting down: {frame.message}",
                               definite=frame.definite, request_id=frame.request_id)
    return error_from_code(frame.code, frame.message, definite=frame.definite,
                           request_id=frame.request_id)
