"""Handshake state machines: success, wrong secrets, versions, ordering and reflection."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypedDict, Unpack

import pytest

from phoenix_cluster._wire import messages as m
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.handshake import (
    ClientHandshake,
    HandshakeResult,
    HandshakeState,
    ServerHandshake,
    compute_proof,
    negotiate_version,
)
from phoenix_cluster.errors import (
    AuthenticationError,
    ConfigError,
    PhoenixInternalError,
    ProtocolError,
)

SECRET = b"cluster-secret"


def counter_nonces(prefix: bytes) -> Callable[[], bytes]:
    counter = itertools.count()
    return lambda: prefix + next(counter).to_bytes(31, "big")


class Options(TypedDict, total=False):
    """What a test sets on a handshake; the helpers below fill in the rest."""

    secret: bytes
    node: str
    incarnation: int
    role: str
    versions: Sequence[int]
    nonce_factory: Callable[[], bytes]


def client(**kw: Unpack[Options]) -> ClientHandshake:
    args: Options = {
        "secret": SECRET,
        "node": "alpha",
        "incarnation": 3,
        "role": "client",
        "nonce_factory": counter_nonces(b"c"),
    }
    args.update(kw)
    return ClientHandshake(**args)


def server(**kw: Unpack[Options]) -> ServerHandshake:
    args: Options = {
        "secret": SECRET,
        "node": "beta",
        "incarnation": 7,
        "nonce_factory": counter_nonces(b"s"),
    }
    args.update(kw)
    return ServerHandshake(**args)


def run(
    c: ClientHandshake, s: ServerHandshake
) -> tuple[HandshakeResult | None, HandshakeResult | None, list[m.Frame]]:
    """Shuttle messages (through the real codec) until both sides are quiet.

    Returns both results and every message sent, in order. Exceptions propagate.
    """
    codec = WireCodec()
    log: list[m.Frame] = []
    c_result = s_result = None
    to_s, to_c = c.messages_to_send(), s.messages_to_send()
    while to_s or to_c:
        log += to_s + to_c
        for msg in to_s:
            s_result = s.receive(codec.decode(codec.encode(msg))) or s_result
        for msg in to_c:
            c_result = c.receive(codec.decode(codec.encode(msg))) or c_result
        to_s, to_c = c.messages_to_send(), s.messages_to_send()
    return c_result, s_result, log


def test_success() -> None:
    c, s = client(), server()
    c_result, s_result, log = run(c, s)
    assert c_result == HandshakeResult(
        version=1, peer_node="beta", peer_incarnation=7, peer_role="member"
    )
    assert s_result == HandshakeResult(
        version=1, peer_node="alpha", peer_incarnation=3, peer_role="client"
    )
    assert c.state is s.state is HandshakeState.DONE
    assert c.result == c_result
    assert [type(x).__name__ for x in log] == [
        "Hello",
        "Hello",
        "Challenge",
        "ChallengeResponse",
        "Welcome",
    ]


def test_deterministic_with_injected_nonces() -> None:
    _, _, log1 = run(client(), server())
    _, _, log2 = run(client(), server())
    assert log1 == log2


def test_default_nonces_are_random() -> None:
    a = ClientHandshake(secret=SECRET, node="a", incarnation=0)
    b = ClientHandshake(secret=SECRET, node="a", incarnation=0)
    assert a.hello.nonce != b.hello.nonce
    assert len(a.hello.nonce) == 32


def test_highest_common_version_wins() -> None:
    c_result, s_result, _ = run(client(versions=(1, 2, 3)), server(versions=(2, 3, 4)))
    assert c_result is not None
    assert s_result is not None
    assert c_result.version == s_result.version == 3


def test_negotiate_version() -> None:
    assert negotiate_version((1, 2), (2, 1)) == 2
    with pytest.raises(ProtocolError, match=r"we speak \[1, 2\], peer speaks \[3\]"):
        negotiate_version((1, 2), (3,))


def test_version_mismatch_both_sides_refuse() -> None:
    c, s = client(versions=(1,)), server(versions=(2,))
    (c_hello,), (s_hello,) = c.messages_to_send(), s.messages_to_send()
    with pytest.raises(ProtocolError, match=r"we speak \[1\], peer speaks \[2\]"):
        c.receive(s_hello)
    with pytest.raises(ProtocolError, match=r"we speak \[2\], peer speaks \[1\]"):
        s.receive(c_hello)
    for side in (c, s):
        (refused,) = side.messages_to_send()
        assert isinstance(refused, m.Refused)
        assert refused.code == "protocol_error"
        assert side.state is HandshakeState.FAILED


def test_wrong_secret_detected_by_client() -> None:
    c, s = client(), server(secret=b"other")
    with pytest.raises(AuthenticationError, match="'beta' failed the cluster-secret challenge"):
        run(c, s)
    # The server's Challenge was rejected: the client never reveals its own proof.
    (refused,) = c.messages_to_send()
    assert isinstance(refused, m.Refused)
    assert refused.code == "authentication_error"
    with pytest.raises(AuthenticationError, match="'alpha' refused the handshake"):
        s.receive(refused)
    assert s.messages_to_send() == []  # no Refused in answer to a Refused


def test_wrong_secret_detected_by_server() -> None:
    c, s = client(), server()
    (c_hello,), s_out = c.messages_to_send(), s.messages_to_send()
    s.receive(c_hello)
    c.receive(s_out[0])
    (challenge,) = s.messages_to_send()
    c.receive(challenge)
    (response,) = c.messages_to_send()
    assert isinstance(response, m.ChallengeResponse)
    # A client without the secret (simulated by a forged proof) is refused by the server.
    forged = compute_proof(
        b"guess", label=b"client", version=1, client_hello=c.hello, server_hello=s.hello
    )
    with pytest.raises(AuthenticationError, match="'alpha' failed"):
        s.receive(m.ChallengeResponse(proof=forged))
    (refused,) = s.messages_to_send()
    assert isinstance(refused, m.Refused)
    assert refused.code == "authentication_error"
    assert "guess" not in refused.message
    with pytest.raises(AuthenticationError, match="'beta' refused the handshake"):
        c.receive(refused)


def test_reflection_fails() -> None:
    """Replaying the server's own proof as the client's proof is rejected."""
    c, s = client(), server()
    (c_hello,) = c.messages_to_send()
    s.messages_to_send()
    s.receive(c_hello)
    (challenge,) = s.messages_to_send()
    assert isinstance(challenge, m.Challenge)
    with pytest.raises(AuthenticationError):
        s.receive(m.ChallengeResponse(proof=challenge.proof))


def test_mirrored_connection_reflection_fails() -> None:
    """An attacker relays a node's own server proof back to that node's client.

    The victim ``alpha`` dials the attacker. The attacker opens a second connection to
    alpha's own server, replaying alpha's client nonce, and forwards alpha's server proof to
    alpha's client as if it were its own. With equal names this would line up, so a peer
    claiming our own name is refused; with any other name the transcripts differ.
    """
    victim_client = client(node="alpha")
    (victim_hello,) = victim_client.messages_to_send()
    assert isinstance(victim_hello, m.Hello)

    # Equal names: refused outright.
    victim_server = server(node="alpha")
    victim_server.messages_to_send()
    with pytest.raises(ProtocolError, match="our own node name"):
        victim_server.receive(victim_hello)

    # Different name: the attacker gets a proof, but it does not fit.
    victim_server = server(node="alpha")
    (server_hello,) = victim_server.messages_to_send()
    assert isinstance(server_hello, m.Hello)
    mirrored = m.Hello(
        versions=victim_hello.versions,
        node="mallory",
        incarnation=server_hello.incarnation,
        nonce=victim_hello.nonce,
        role=server_hello.role,
    )
    victim_server.receive(mirrored)
    (challenge,) = victim_server.messages_to_send()
    victim_client.receive(
        m.Hello(
            versions=server_hello.versions,
            node="mallory",
            incarnation=server_hello.incarnation,
            nonce=server_hello.nonce,
            role=server_hello.role,
        )
    )
    with pytest.raises(AuthenticationError, match="'mallory' failed"):
        victim_client.receive(challenge)
    (refused,) = victim_client.messages_to_send()  # a Refused, never a ChallengeResponse
    assert isinstance(refused, m.Refused)
    assert refused.code == "authentication_error"


def test_proofs_differ_by_label() -> None:
    c, s = client(), server()
    proofs = {
        compute_proof(SECRET, label=label, version=1, client_hello=c.hello, server_hello=s.hello)
        for label in (b"client", b"server")
    }
    assert len(proofs) == 2


def test_replayed_challenge_from_other_connection_fails() -> None:
    # Record a full handshake, then replay its Challenge to a fresh client (new nonce).
    c1, s1 = client(), server()
    _, _, log = run(c1, s1)
    old_challenge = next(x for x in log if isinstance(x, m.Challenge))
    c2 = client(nonce_factory=counter_nonces(b"x"))
    c2.messages_to_send()
    c2.receive(server().hello)
    with pytest.raises(AuthenticationError, match="different Hello"):
        c2.receive(old_challenge)


def test_tampered_version_list_breaks_proof() -> None:
    """A man in the middle stripping versions from the client's Hello is caught."""
    c, s = client(versions=(1, 2)), server(versions=(1, 2))
    (c_hello,), (s_hello,) = c.messages_to_send(), s.messages_to_send()
    assert isinstance(c_hello, m.Hello)
    s.receive(
        m.Hello(
            versions=(1,),
            node=c_hello.node,
            incarnation=c_hello.incarnation,
            nonce=c_hello.nonce,
            role=c_hello.role,
        )
    )
    c.receive(s_hello)
    (challenge,) = s.messages_to_send()
    assert isinstance(challenge, m.Challenge)
    with pytest.raises(ProtocolError, match="version 1, expected 2"):
        c.receive(challenge)
    forged = m.Challenge(version=2, nonce=challenge.nonce, proof=challenge.proof)
    c2 = client(versions=(1, 2))
    c2.messages_to_send()
    c2.receive(s_hello)
    with pytest.raises(AuthenticationError):
        c2.receive(forged)


@pytest.mark.parametrize(
    "msg",
    [
        m.Ping(1),
        m.Call(1, "k", "key", "f", b"", 100),
        m.Goodbye(),
        m.Welcome(version=1, node="beta"),
        m.ChallengeResponse(proof=b"x"),
    ],
)
def test_client_rejects_anything_before_hello(msg: m.Frame) -> None:
    c = client()
    c.messages_to_send()
    with pytest.raises(ProtocolError, match=f"unexpected {type(msg).__name__}"):
        c.receive(msg)
    (refused,) = c.messages_to_send()
    assert isinstance(refused, m.Refused)
    assert refused.code == "protocol_error"


@pytest.mark.parametrize(
    "msg", [m.Ping(1), m.Challenge(1, b"x", b"y"), m.ChallengeResponse(proof=b"x")]
)
def test_server_rejects_anything_before_hello(msg: m.Frame) -> None:
    s = server()
    with pytest.raises(ProtocolError, match="unexpected"):
        s.receive(msg)


def test_duplicate_hello_rejected() -> None:
    c, s = client(), server()
    (c_hello,) = c.messages_to_send()
    s.receive(c_hello)
    with pytest.raises(ProtocolError, match="unexpected Hello"):
        s.receive(c_hello)


def test_server_rejects_client_messages_out_of_order() -> None:
    c, s = client(), server()
    (c_hello,) = c.messages_to_send()
    s.receive(c_hello)
    with pytest.raises(ProtocolError, match="unexpected Welcome"):
        s.receive(m.Welcome(version=1, node="alpha"))


def test_client_rejects_welcome_before_challenge() -> None:
    c, s = client(), server()
    (s_hello,) = s.messages_to_send()
    c.receive(s_hello)
    with pytest.raises(ProtocolError, match="unexpected Welcome"):
        c.receive(m.Welcome(version=1, node="beta"))


def test_client_rejects_mismatched_welcome() -> None:
    c, s = client(), server()
    (c_hello,), (s_hello,) = c.messages_to_send(), s.messages_to_send()
    s.receive(c_hello)
    c.receive(s_hello)
    c.receive(s.messages_to_send()[0])
    with pytest.raises(ProtocolError, match="does not match"):
        c.receive(m.Welcome(version=1, node="gamma"))


def test_failed_handshake_stays_failed() -> None:
    c = client()
    with pytest.raises(ProtocolError):
        c.receive(m.Ping(1))
    with pytest.raises(ProtocolError, match="already failed"):
        c.receive(server().hello)


def test_receive_after_done_is_a_bug() -> None:
    c, s = client(), server()
    run(c, s)
    with pytest.raises(PhoenixInternalError):
        c.receive(m.Ping(1))


def test_peer_refusal_maps_to_error_class() -> None:
    c = client()
    with pytest.raises(ProtocolError, match="'peer' refused the handshake: too old"):
        c.receive(m.Refused(code="protocol_error", message="too old"))
    assert c.messages_to_send() == [c.hello]


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"secret": b""}, "cookie"),
        ({"node": ""}, "name"),
        ({"versions": ()}, "versions"),
        ({"nonce_factory": lambda: b"short"}, "nonce_factory"),
    ],
)
def test_bad_configuration(kw: Options, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        client(**kw)
    assert info.value.key == key


def test_repr() -> None:
    c, s = client(), server()
    assert repr(c) == "<ClientHandshake alpha -> ? [await_hello]>"
    run(c, s)
    assert repr(s) == "<ServerHandshake beta -> alpha [done]>"
