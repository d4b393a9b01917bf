"""Every message that crosses the wire between two Phoenix nodes, and nothing else.

Each frame body is one tagged, frozen :class:`msgspec.Struct`. ``array_like=True`` encodes a
message as a msgpack array ``[tag, field1, field2, ...]`` instead of a map, so field names
never travel: a ``Ping`` is 7 bytes, and a ``Call`` adds about 20 bytes to its kind, key,
method and payload.
The price is positional evolution, so these rules are binding (msgspec
``docs/schema-evolution.rst``):

- never remove, reorder or retype a field, and never reuse a tag;
- a new field goes at the end of its struct and has a default, so an older peer ignores it
  (msgspec drops trailing array items it does not know) and a newer peer reading an older
  one fills in the default;
- anything that changes the meaning of an existing field needs a new
  :data:`PROTOCOL_VERSION`, negotiated in the handshake.

Integer fields that are counters, ids or budgets are constrained to ``>= 0`` so a hostile
or buggy peer is rejected at decode time (as :class:`~phoenix_cluster.errors.ProtocolError`)
instead of deep inside a higher layer. This module owns types only; it must not import
anything above L0 and never does I/O.
"""

from __future__ import annotations

from typing import Annotated, Final, TypeAlias

import msgspec

__all__ = [
    "MAX_NONCE_BYTES",
    "MIN_NONCE_BYTES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Call",
    "Cast",
    "Challenge",
    "ChallengeResponse",
    "Error",
    "Frame",
    "Goodbye",
    "HANDSHAKE_MESSAGES",
    "Hello",
    "Ping",
    "Pong",
    "Redirect",
    "Refused",
    "Reply",
    "Welcome",
]

PROTOCOL_VERSION: Final = 1
"""The newest protocol version this code speaks."""

SUPPORTED_VERSIONS: Final[tuple[int, ...]] = (1,)
"""Every version this code can speak; the handshake picks the highest one both sides share."""

MIN_NONCE_BYTES: Final = 16
"""Shorter nonces could repeat across connections and let an old proof be replayed."""

MAX_NONCE_BYTES: Final = 64
"""Bounds what a peer can make us hash before it has proved anything."""

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_Nonce = Annotated[bytes, msgspec.Meta(min_length=MIN_NONCE_BYTES, max_length=MAX_NONCE_BYTES)]


class _Message(msgspec.Struct, frozen=True, array_like=True):
    """Shared options; each subclass adds its own short ``tag``."""


# --- handshake ---------------------------------------------------------------------------


class Hello(_Message, frozen=True, tag="hello"):
    """First message from both sides, sent without waiting for the peer's.

    Attributes:
        versions: every protocol version the sender speaks.
        node: the sender's node name.
        incarnation: the sender's incarnation; a restarted node has a higher one.
        nonce: fresh random bytes; both nonces are bound into both proofs.
        role: ``"member"`` hosts agents, ``"client"`` only routes messages.
    """

    versions: tuple[_NonNegative, ...]
    node: str
    incarnation: _NonNegative
    nonce: _Nonce
    role: str = "member"


class Challenge(_Message, frozen=True, tag="chal"):
    """Server → client, once it has the client's Hello: the server proves the secret first.

    Attributes:
        version: the protocol version the server chose.
        nonce: the client nonce this proof answers (echoed so a Challenge replayed from
            another connection is reported as such, not as a wrong secret).
        proof: HMAC-SHA256 over both Hellos and the version, labelled ``server``.
    """

    version: _NonNegative
    nonce: bytes
    proof: bytes


class ChallengeResponse(_Message, frozen=True, tag="resp"):
    """Client → server, after the server's proof checked out: the client's own proof.

    Attributes:
        proof: HMAC-SHA256 over both Hellos and the version, labelled ``client``.
    """

    proof: bytes


class Welcome(_Message, frozen=True, tag="welc"):
    """Server → client: the client's proof checked out; the connection is open for traffic."""

    version: _NonNegative
    node: str


class Refused(_Message, frozen=True, tag="refu"):
    """Either side, just before it closes a connection it will not accept.

    Attributes:
        code: the ``code`` of the matching :mod:`phoenix_cluster.errors` class, e.g.
            ``"authentication_error"`` or ``"protocol_error"``.
        message: human-readable reason, safe to log on the other side (never the secret).
    """

    code: str
    message: str


# --- agent traffic -----------------------------------------------------------------------


class Call(_Message, frozen=True, tag="call"):
    """Run ``method`` on agent ``kind``/``key`` and answer with a Reply, Error or Redirect.

    Attributes:
        request_id: unique per caller; a retry reuses it so the call runs at most once.
        payload: msgpack of ``[args, kwargs]`` (see :func:`~.codec.encode_payload`).
        timeout_ms: the caller's *remaining* budget, relative because clocks differ
            between nodes; the owner skips the call if it cannot start in time.
        headers: small string metadata such as trace context.
    """

    request_id: _NonNegative
    kind: str
    key: str
    method: str
    payload: bytes
    timeout_ms: _NonNegative
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class Cast(_Message, frozen=True, tag="cast"):
    """Like :class:`Call`, but answered once the message is *queued*, not once it ran.

    Attributes:
        timeout_ms: ``> 0``: the sender waits for an acknowledgement. The receiver answers
            an empty :class:`Reply` once the message is in the agent's mailbox (waiting
            up to ``timeout_ms`` for room in a full one), or an :class:`Error` saying why
            it was not queued (``overloaded`` when the mailbox stayed full). ``0`` (what
            peers older than this field send): nobody answers; a refusal is logged and
            counted as a dropped message on the receiver.
    """

    request_id: _NonNegative
    kind: str
    key: str
    method: str
    payload: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_ms: _NonNegative = 0


class Reply(_Message, frozen=True, tag="rep"):
    """The successful answer to a Call; ``payload`` is the msgpack-encoded result."""

    request_id: _NonNegative
    payload: bytes


class Error(_Message, frozen=True, tag="err"):
    """The failed answer to a Call: an error record, never a pickled exception.

    Attributes:
        code: the ``code`` class attribute of a :mod:`phoenix_cluster.errors` class;
            :func:`~phoenix_cluster.errors.error_from_code` turns it back into one.
        definite: ``True`` when the call certainly had no effect.
        remote_type: for ``agent_error``, the qualified name of the handler's exception.
        remote_traceback: for ``agent_error``, the formatted traceback on the owner.
    """

    request_id: _NonNegative
    code: str
    message: str
    definite: bool
    remote_type: str = ""
    remote_traceback: str = ""


class Redirect(_Message, frozen=True, tag="redir"):
    """The receiver does not own the key; resend the Call to ``owner`` at ``address``."""

    request_id: _NonNegative
    owner: str
    address: str


# --- connection upkeep -------------------------------------------------------------------


class Ping(_Message, frozen=True, tag="ping"):
    """Keepalive and round-trip probe; the peer answers with a Pong of the same ``seq``."""

    seq: _NonNegative


class Pong(_Message, frozen=True, tag="pong"):
    """Answer to a Ping."""

    seq: _NonNegative


class Goodbye(_Message, frozen=True, tag="bye"):
    """Sent before a graceful close, so the peer can tell leaving from crashing.

    ``requests_read`` (like HTTP/2 GOAWAY's last stream id): how many Calls and Casts the
    sender read from this connection before it stopped reading. The peer's requests after
    those were never read, so they fail *definite* and are safely sent elsewhere; ``-1``
    says the count is not known (then every pending request's outcome is unknown).
    """

    reason: str = ""
    requests_read: Annotated[int, msgspec.Meta(ge=-1)] = -1


Frame: TypeAlias = (
    Hello
    | Challenge
    | ChallengeResponse
    | Welcome
    | Refused
    | Call
    | Cast
    | Reply
    | Error
    | Redirect
    | Ping
    | Pong
    | Goodbye
)
"""Every frame body; :class:`~.codec.WireCodec` decodes exactly this union."""

HANDSHAKE_MESSAGES: Final[tuple[type[Frame], ...]] = (
    Hello,
    Challenge,
    ChallengeResponse,
    Welcome,
    Refused,
)
"""The only message types allowed before the handshake completes."""
