"""Fuzzing the handshake: hostile peers that do not know the secret, garbage bytes, and a
man in the middle who changes one field of one message.

``test_handshake.py`` checks each rule with hand-picked messages. Here hypothesis
chooses: whatever arrives, ``receive`` either waits for more or raises a
:class:`~phoenix_cluster.errors.PhoenixError` (never another exception), a side that
failed stays failed, and no side completes the handshake with a peer that cannot prove
the secret or whose messages were altered on the way.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from phoenix_cluster._wire import messages as m
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.handshake import (
    ClientHandshake,
    HandshakeState,
    ServerHandshake,
    _Handshake,
)
from phoenix_cluster.errors import PhoenixError, ProtocolError

SECRET = b"fuzzed-cluster-secret"
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

names = st.text(max_size=12)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
nonces = st.binary(min_size=0, max_size=40)
versions = st.lists(st.integers(min_value=0, max_value=4), max_size=4).map(tuple)

hellos = st.builds(m.Hello, versions=versions, node=names, incarnation=u64, nonce=nonces,
                   role=st.sampled_from(["member", "client", "", "boss"]))
challenges = st.builds(m.Challenge, version=st.integers(0, 4), nonce=nonces,
                       proof=st.binary(max_size=40))
responses = st.builds(m.ChallengeResponse, proof=st.binary(max_size=40))
welcomes = st.builds(m.Welcome, version=st.integers(0, 4), node=names)
refusals = st.builds(m.Refused, code=st.sampled_from(["authentication_error",
                                                      "protocol_error", "bogus", ""]),
                     message=st.text(max_size=20))
handshake_frames = st.one_of(hellos, challenges, responses, welcomes, refusals)


def nonce_source(prefix: bytes) -> Callable[[], bytes]:
    counter = itertools.count()
    return lambda: prefix + next(counter).to_bytes(31, "big")


def client() -> ClientHandshake:
    return ClientHandshake(secret=SECRET, node="alpha", incarnation=3,
                           nonce_factory=nonce_source(b"c"))


def server() -> ServerHandshake:
    return ServerHandshake(secret=SECRET, node="beta", incarnation=7,
                           nonce_factory=nonce_source(b"s"))


def feed(side: _Handshake, frames: list[m.Frame]) -> None:
    """Feed ``frames`` to ``side``; only PhoenixErrors may come out, and a failure sticks."""
    failed = False
    for frame in frames:
        try:
            side.receive(frame)
        except PhoenixError:
            if failed:
                continue
            failed = True
            assert side.state is HandshakeState.FAILED
            continue
        assert not failed, "a failed handshake accepted another message"
        side.messages_to_send()


@pytest.mark.parametrize("make", [client, server], ids=["client", "server"])
@FUZZ
@given(frames=st.lists(handshake_frames, max_size=6))
def test_a_peer_without_the_secret_never_completes(make: Callable[[], _Handshake],
                                                   frames: list[m.Frame]) -> None:
    side = make()
    feed(side, frames)
    assert side.state is not HandshakeState.DONE
    assert side.result is None


@pytest.mark.parametrize("make", [client, server], ids=["client", "server"])
@FUZZ
@given(blobs=st.lists(st.binary(max_size=64), max_size=5))
def test_garbage_bytes_are_protocol_errors(make: Callable[[], _Handshake],
                                           blobs: list[bytes]) -> None:
    codec = WireCodec()
    frames: list[m.Frame] = []
    for blob in blobs:
        try:
            frames.append(codec.decode(blob))
        except ProtocolError:
            continue  # the codec refuses it; the connection would close here
    side = make()
    feed(side, frames)
    assert side.state is not HandshakeState.DONE


_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "versions": versions, "node": names, "incarnation": u64, "nonce": nonces,
    "role": st.sampled_from(["member", "client"]), "version": st.integers(0, 4),
    "proof": st.binary(min_size=32, max_size=32),
}


@FUZZ
@given(data=st.data(), index=st.integers(min_value=0, max_value=4))
def test_a_man_in_the_middle_changing_one_field_is_caught(data: st.DataObject,
                                                          index: int) -> None:
    """Messages in order: client Hello, server Hello, Challenge, ChallengeResponse,
    Welcome. Changing any of the first four leaves both sides unfinished (the proofs
    cover both Hellos and the version); changing the Welcome fails the client only."""
    c, s = client(), server()
    codec = WireCodec()
    sent = 0
    tampered = False
    to_s, to_c = c.messages_to_send(), s.messages_to_send()
    while to_s or to_c:
        for outbox, target in ((to_s, s), (to_c, c)):
            for msg in outbox:
                if sent == index:
                    fields = [f for f in msgspec.structs.fields(msg) if f.name in _FIELD_VALUES]
                    field = data.draw(st.sampled_from(fields)).name
                    value = data.draw(_FIELD_VALUES[field])
                    assume(value != getattr(msg, field))
                    msg = msgspec.structs.replace(msg, **{field: value})
                    tampered = True
                sent += 1
                with contextlib.suppress(PhoenixError):
                    target.receive(codec.decode(codec.encode(msg)))
        to_s, to_c = c.messages_to_send(), s.messages_to_send()
    assert tampered
    assert c.state is not HandshakeState.DONE
    if index < 4:
        assert s.state is not HandshakeState.DONE
    else:  # the client proved the secret before the Welcome was changed
        assert s.result is not None and s.result.peer_node == "alpha"
