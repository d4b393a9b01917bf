"""The connection handshake as two I/O-free state machines: version choice and mutual auth.

Sequence (C dials, S accepts; both Hellos are sent at once, without waiting)::

    C                                                         S
    |-- Hello(versions, node, incarnation, nonce_c, role) -->|
    |<-- Hello(versions, node, incarnation, nonce_s, role) --|
    |<-- Challenge(version, nonce_c, proof_s) ---------------|  S proves first
    |-- ChallengeResponse(proof_c) ------------------------->|  C checked proof_s
    |<-- Welcome(version, node) -----------------------------|  S checked proof_c
    |                 ... Call / Reply / Ping ...            |

Either side may instead send ``Refused(code, message)`` and close. Each proof is
``HMAC-SHA256(secret, transcript)`` where the transcript holds a domain label (``client`` or
``server``), the chosen version and *every* field of both Hellos, each length-prefixed so
no two transcripts encode alike. Consequences:

- Fresh nonces from both sides make every proof single-use: a recorded one never fits
  another connection.
- The label stops reflection: a server proof is never a valid client proof, so echoing
  the server's proof back to it fails.
- Binding both version lists stops a man in the middle from stripping versions to force a
  downgrade without breaking the proofs.
- A peer claiming our own node name is refused. It is either a node dialing itself or an
  attacker relaying our own server's proof to our own client over a second connection:
  the transcript puts the client's name before the server's, so that relay only fits when
  both names are equal.

What this does *not* give is channel protection: frames after the handshake carry no MAC,
so on an untrusted network use TLS underneath (as with Erlang distribution cookies).

Usage, h2-style (the machine queues what to send; errors are queued, then raised)::

    hs = ClientHandshake(secret=s, node="a", incarnation=1)
    send(hs.messages_to_send())                  # the Hello
    result = None
    while result is None:
        msg = codec.decode(await read_body())
        try:
            result = hs.receive(msg)
        finally:
            send(hs.messages_to_send())          # next step, or a Refused before raising
    # connection open: result.version, result.peer_node, ...

The transport should bound the whole exchange with a timeout and a small frame limit.

The transcript, the proofs and version choice are ``handshake_proof.py``; this module is
the two state machines. Must not import anything above L0; no I/O, no clock, randomness
only via ``nonce_factory``.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from phoenix_cluster.errors import (
    AuthenticationError,
    ConfigError,
    PhoenixError,
    PhoenixInternalError,
    ProtocolError,
    error_from_code,
)

from .handshake_proof import (
    CLIENT_LABEL,
    NONCE_BYTES,
    SERVER_LABEL,
    compute_proof,
    default_nonce,
    negotiate_version,
)
from .messages import (
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    SUPPORTED_VERSIONS,
    Challenge,
    ChallengeResponse,
    Frame,
    Hello,
    Refused,
    Welcome,
)

__all__ = [
    "NONCE_BYTES",
    "ClientHandshake",
    "HandshakeResult",
    "HandshakeState",
    "ServerHandshake",
    "compute_proof",
    "negotiate_version",
]


class HandshakeState(enum.Enum):
    """Where a handshake stands; each value names what it waits for."""

    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"  # client only
    AWAIT_RESPONSE = "await_response"  # server only
    AWAIT_WELCOME = "await_welcome"  # client only
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What a successful handshake established about the peer.

    Attributes:
        version: the protocol version both sides will speak.
        peer_node: the peer's node name, proven by its knowledge of the secret.
        peer_incarnation: the peer's incarnation (a restart shows up as a higher one).
        peer_role: ``"member"`` or ``"client"``.
    """

    version: int
    peer_node: str
    peer_incarnation: int
    peer_role: str


class _Handshake:
    """What both sides share: the Hello, the outbox, failure handling and proofs."""

    _our_label: bytes
    _their_label: bytes

    def __init__(
        self,
        *,
        secret: bytes,
        node: str,
        incarnation: int,
        role: str = "member",
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        nonce_factory: Callable[[], bytes] = default_nonce,
    ) -> None:
        if not secret:
            raise ConfigError("the cluster secret must not be empty", key="cookie")
        if not node:
            raise ConfigError("the node name must not be empty", key="name")
        if not versions:
            raise ConfigError("at least one protocol version is required", key="versions")
        nonce = nonce_factory()
        if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise ConfigError(
                f"nonce_factory returned {len(nonce)} bytes; need"
                f" {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES}",
                key="nonce_factory",
            )
        self._secret = secret
        self._hello = Hello(
            versions=tuple(versions), node=node, incarnation=incarnation, nonce=nonce, role=role
        )
        self._peer_hello: Hello | None = None
        self._version = 0
        self._outbox: list[Frame] = [self._hello]
        self._error: PhoenixError | None = None
        self.state = HandshakeState.AWAIT_HELLO
        self.result: HandshakeResult | None = None

    @property
    def hello(self) -> Hello:
        """The Hello this side sent (queued at construction)."""
        return self._hello

    def messages_to_send(self) -> list[Frame]:
        """Take every message queued for the peer, oldest first; call after each step."""
        out, self._outbox = self._outbox, []
        return out

    def receive(self, msg: Frame) -> HandshakeResult | None:
        """Feed one message from the peer.

        Returns:
            the result once the handshake has succeeded, else ``None`` (keep reading).

        Raises:
            AuthenticationError: the peer's proof is wrong (a ``Refused`` is queued for it).
            ProtocolError: unexpected message, no common version, or a malformed Hello
                (a ``Refused`` is queued); also raised again for any message after failure.
            PhoenixError: the peer sent ``Refused``; the class matches its ``code``.
            PhoenixInternalError: called after the handshake already succeeded.
        """
        if self.state is HandshakeState.DONE:
            raise PhoenixInternalError("handshake already complete; route messages elsewhere")
        if self._error is not None:
            raise ProtocolError(f"handshake already failed: {self._error}")
        try:
            return self._dispatch(msg)
        except PhoenixError as exc:
            self.state = HandshakeState.FAILED
            self._error = exc
            if not isinstance(msg, Refused):
                self._outbox.append(Refused(code=exc.code, message=exc.message))
            raise

    def _dispatch(self, msg: Frame) -> HandshakeResult | None:
        if isinstance(msg, Refused):
            peer = self._peer_hello.node if self._peer_hello is not None else "peer"
            raise error_from_code(msg.code, f"{peer!r} refused the handshake: {msg.message}")
        if self.state is HandshakeState.AWAIT_HELLO and isinstance(msg, Hello):
            self._on_hello(msg)
            return None
        return self._on_message(msg)

    def _on_hello(self, hello: Hello) -> None:
        if not hello.node:
            raise ProtocolError("peer Hello has an empty node name")
        if hello.node == self._hello.node:
            raise ProtocolError(
                f"peer claims our own node name {hello.node!r} (self-connection or reflection)"
            )
        self._version = negotiate_version(self._hello.versions, hello.versions)
        self._peer_hello = hello
        self._after_hello()

    def _after_hello(self) -> None:
        raise NotImplementedError

    def _on_message(self, msg: Frame) -> HandshakeResult | None:
        raise NotImplementedError

    def _unexpected(self, msg: Frame) -> ProtocolError:
        return ProtocolError(
            f"unexpected {type(msg).__name__} during handshake"
            f" ({self._side} in state {self.state.value})"
        )

    @property
    def _side(self) -> str:
        return self._our_label.decode()

    def _proof(self, label: bytes) -> bytes:
        assert self._peer_hello is not None
        client, server = self._hello, self._peer_hello
        if self._our_label is SERVER_LABEL:
            client, server = server, client
        return compute_proof(
            self._secret,
            label=label,
            version=self._version,
            client_hello=client,
            server_hello=server,
        )

    def _verify(self, proof: bytes) -> None:
        if not hmac.compare_digest(proof, self._proof(self._their_label)):
            assert self._peer_hello is not None
            raise AuthenticationError(
                f"node {self._peer_hello.node!r} failed the cluster-secret challenge"
                " (different cookie?)"
            )

    def _succeed(self) -> HandshakeResult:
        assert self._peer_hello is not None
        self.state = HandshakeState.DONE
        self.result = HandshakeResult(
            version=self._version,
            peer_node=self._peer_hello.node,
            peer_incarnation=self._peer_hello.incarnation,
            peer_role=self._peer_hello.role,
        )
        return self.result

    def __repr__(self) -> str:
        peer = self._peer_hello.node if self._peer_hello is not None else "?"
        return f"<{type(self).__name__} {self._hello.node} -> {peer} [{self.state.value}]>"


class ClientHandshake(_Handshake):
    """The dialing side: waits for the server's proof before revealing its own.

    Args:
        secret: the cluster secret (cookie) both sides must share.
        node: this node's name.
        incarnation: this node's incarnation.
        role: this node's role, ``"member"`` or ``"client"``.
        versions: protocol versions to offer; tests narrow it to force a mismatch.
        nonce_factory: fresh random bytes per call; inject a seeded source for
            deterministic tests and simulation. Defaults to 32 bytes of ``os.urandom``.
    """

    _our_label = CLIENT_LABEL
    _their_label = SERVER_LABEL

    def _after_hello(self) -> None:
        self.state = HandshakeState.AWAIT_CHALLENGE

    def _on_message(self, msg: Frame) -> HandshakeResult | None:
        if self.state is HandshakeState.AWAIT_CHALLENGE and isinstance(msg, Challenge):
            if msg.version != self._version:
                raise ProtocolError(
                    f"server chose protocol version {msg.version}, expected {self._version}"
                )
            if not hmac.compare_digest(msg.nonce, self._hello.nonce):
                raise AuthenticationError(
                    "Challenge answers a different Hello (replayed from another connection?)"
                )
            self._verify(msg.proof)
            self._outbox.append(ChallengeResponse(proof=self._proof(CLIENT_LABEL)))
            self.state = HandshakeState.AWAIT_WELCOME
            return None
        if self.state is HandshakeState.AWAIT_WELCOME and isinstance(msg, Welcome):
            assert self._peer_hello is not None
            if msg.version != self._version or msg.node != self._peer_hello.node:
                raise ProtocolError(
                    f"Welcome(version={msg.version}, node={msg.node!r}) does not match the"
                    f" handshake (version {self._version}, node {self._peer_hello.node!r})"
                )
            return self._succeed()
        raise self._unexpected(msg)


class ServerHandshake(_Handshake):
    """The accepting side: proves the secret first, then checks the client's proof.

    Args:
        secret: the cluster secret (cookie) both sides must share.
        node: this node's name.
        incarnation: this node's incarnation.
        role: this node's role, ``"member"`` or ``"client"``.
        versions: protocol versions to offer; tests narrow it to force a mismatch.
        nonce_factory: fresh random bytes per call; inject a seeded source for
            deterministic tests and simulation. Defaults to 32 bytes of ``os.urandom``.
    """

    _our_label = SERVER_LABEL
    _their_label = CLIENT_LABEL

    def _after_hello(self) -> None:
        assert self._peer_hello is not None
        self._outbox.append(
            Challenge(
                version=self._version,
                nonce=self._peer_hello.nonce,
                proof=self._proof(SERVER_LABEL),
            )
        )
        self.state = HandshakeState.AWAIT_RESPONSE

    def _on_message(self, msg: Frame) -> HandshakeResult | None:
        if self.state is HandshakeState.AWAIT_RESPONSE and isinstance(msg, ChallengeResponse):
            self._verify(msg.proof)
            self._outbox.append(Welcome(version=self._version, node=self._hello.node))
            return self._succeed()
        raise self._unexpected(msg)
