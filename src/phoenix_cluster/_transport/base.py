"""The transport's seams: what higher layers may rely on, whatever carries the bytes.

The agents layer and membership talk to peers only through :class:`Transport` and
:class:`PeerConnection`, so TCP, TLS, a later HTTP/2 or QUIC transport and the
simulator's in-memory network are interchangeable (STYLE 3.10, httpcore
``_backends/base.py``). Inbound traffic reaches the node through one
:data:`InboundHandler`.

Errors here are internal to the transport layer. They follow trio's split:
:class:`ConnectionClosed` means *we* closed the connection, :class:`ConnectionBroken`
means the peer or the network did. The agents layer maps both to
``phx.NodeUnavailable`` (or ``phx.NodeClosed`` when this node is shutting down); neither
reaches users. ``OSError`` never leaves this package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from phoenix_cluster._wire.messages import Call, Cast, Error, Frame, Redirect, Reply
from phoenix_cluster.errors import PhoenixError

__all__ = [
    "ConnectionBroken",
    "ConnectionClosed",
    "ConnectionState",
    "ConnectionStatistics",
    "InboundHandler",
    "PeerConnection",
    "Transport",
    "TransportError",
    "TransportStatistics",
]

ConnectionState = Literal["handshaking", "open", "retiring", "closing", "closed"]
"""``retiring``: a duplicate connection that finishes its in-flight work, then closes."""


class TransportError(PhoenixError):
    """A connection could not carry a message. Internal to L2 and the layer above it.

    Attributes:
        peer: the peer's node name, or its address when the name is not known yet.
    """

    code = "transport_error"

    def __init__(
        self,
        message: str = "",
        *,
        peer: str = "",
        definite: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.peer = peer


class ConnectionClosed(TransportError):
    """We closed the connection (``close()``, shutdown, or a duplicate being retired).

    Raised by ``request``/``send`` on a connection this node closed, and to requests that
    were pending when it did. You get :class:`ConnectionBroken` instead when the peer or
    the network ended it. ``definite`` is ``True`` when the message never left this node.
    """

    code = "connection_closed"
    default_definite = False


class ConnectionBroken(TransportError):
    """The peer or the network ended the connection (reset, EOF, Goodbye, keepalive).

    Every request pending on the connection fails with this at once, with
    ``definite=False``: the peer may have run it. A dial that never reached the peer
    raises it with ``definite=True``. You get :class:`ConnectionClosed` when we closed it.
    """

    code = "connection_broken"
    default_definite = False


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of one peer connection.

    Attributes:
        outbound: ``True`` if this node dialled it.
        pending_requests: calls sent and awaiting their reply.
        queued_frames: frames waiting for the writer (bounded by ``send_queue_frames``).
        inbound_tasks: inbound calls and casts whose handler is still running.
        writes: socket writes; ``frames_sent / writes`` shows write coalescing.
    """

    peer_name: str
    peer_address: str
    outbound: bool
    state: ConnectionState
    pending_requests: int
    queued_frames: int
    inbound_tasks: int
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    writes: int


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """A snapshot of a transport; counters cover its whole life.

    Attributes:
        connections: established connections, including ones still retiring.
        peers: distinct peers with a usable connection.
        handshaking: connections (either direction) still in the handshake.
        dial_attempts: outbound connection attempts, successful or not.
        accepted: inbound TCP connections accepted, before the handshake.
        handshake_failures: handshakes that failed, timed out or were refused.
        auth_failures: the subset refused for a wrong cluster secret.
        protocol_errors: connections closed for bad input (framing, decoding, order).
    """

    node: str
    address: str | None
    state: str
    connections: int
    peers: int
    handshaking: int
    dial_attempts: int
    accepted: int
    handshake_failures: int
    auth_failures: int
    protocol_errors: int


class PeerConnection(Protocol):
    """One authenticated, multiplexed connection to a peer node.

    Many requests share it at once, matched by ``request_id``. Callers hold it for as
    long as they like: if it is retired as a duplicate, new requests move to the
    surviving connection to the same peer.
    """

    @property
    def peer_name(self) -> str:
        """The peer's node name, proven by the handshake."""
        ...

    @property
    def peer_address(self) -> str:
        """``host:port`` we dialled, or the remote socket address of an inbound one."""
        ...

    @property
    def peer_incarnation(self) -> int: ...

    @property
    def peer_role(self) -> str: ...

    @property
    def is_open(self) -> bool:
        """Whether new requests can be sent (not closing, not closed)."""
        ...

    async def request(self, call: Call | Cast, timeout_s: float) -> Reply | Error | Redirect:
        """Send ``call`` and wait for the frame answering its ``request_id``.

        A :class:`Cast` is answered only when it asks for an acknowledgement
        (``timeout_ms > 0``): the receiver answers once it queued the message.

        Raises:
            phx.CallTimeout: no answer within ``timeout_s`` (the peer may still run it).
            phx.Overloaded: the send queue stayed full for ``timeout_s``; nothing was sent.
            phx.ProtocolError: ``call`` cannot be encoded or exceeds ``max_frame_bytes``.
            ConnectionBroken: the connection was lost before the answer came.
            ConnectionClosed: we closed the connection.
        """
        ...

    async def send(self, frame: Frame, *, timeout_s: float | None = None) -> None:
        """Queue a frame that gets no answer (a Cast); return once it is queued.

        Raises:
            phx.Overloaded: the send queue stayed full for ``timeout_s`` (default: the
                transport's ``send_timeout_s``); the frame was not queued.
            ConnectionBroken, ConnectionClosed: the connection is gone.
        """
        ...

    def close(self) -> None:
        """Start a graceful close (Goodbye, flush, close); pending requests fail at once."""
        ...

    async def wait_closed(self) -> None:
        """Return once the connection is fully closed, whoever closed it."""
        ...

    def statistics(self) -> ConnectionStatistics: ...


InboundHandler = Callable[[PeerConnection, Call | Cast], Awaitable[Reply | Error | Redirect | None]]
"""Handles one inbound Call or Cast, in its own task.

For a Call, return the Reply, Error or Redirect to send back (``None`` is answered with an
``internal_error``). For a Cast that asks for an acknowledgement (``timeout_ms > 0``)
likewise, once the message is queued; for any other Cast the return value is ignored.
An exception becomes an ``Error(code="internal_error")`` reply and a log line; the
connection stays up.

Fast path: a handler *object* may also have ``try_now(peer, frame, answer) -> bool``,
called first, synchronously, as the frame arrives. Returning ``True`` means it took the
frame: for a Call (or an acknowledged Cast) it will call ``answer(reply)`` exactly once,
later or at once; for another Cast nothing more happens. Returning ``False`` (without
calling ``answer``) falls back to the task above. It spares a task and several
event-loop turns per message.
"""


class Transport(Protocol):
    """Listens for peers, dials peers, and keeps one connection per peer pair."""

    @property
    def node_name(self) -> str: ...

    async def start(self, listen: str) -> str:
        """Listen on ``host:port`` (port 0 picks one) and return the bound ``host:port``."""
        ...

    async def connect(self, address: str) -> PeerConnection:
        """Return the connection to the node at ``address``, dialling if there is none.

        Raises:
            phx.AuthenticationError: the peer does not share our cluster secret.
            phx.ProtocolError: the peer speaks no common protocol version, or misbehaved.
            ConnectionBroken: the address cannot be reached (``definite=True``).
            phx.NodeClosed: this transport is closed.
        """
        ...

    async def aclose(self) -> None:
        """Say Goodbye to every peer, close every connection and stop listening."""
        ...

    def statistics(self) -> TransportStatistics: ...
