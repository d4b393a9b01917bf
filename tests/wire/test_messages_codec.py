"""Messages and codec: every message round-trips; nothing but ProtocolError ever escapes."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_cluster import errors
from phoenix_cluster._wire import messages as m
from phoenix_cluster._wire.codec import WireCodec, decode_payload, encode_payload
from phoenix_cluster.errors import ProtocolError

u64 = st.integers(min_value=0, max_value=2**64 - 1)
i64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
text = st.text(max_size=40)
blob = st.binary(max_size=200)
nonce = st.binary(min_size=m.MIN_NONCE_BYTES, max_size=m.MAX_NONCE_BYTES)
headers = st.dictionaries(text, text, max_size=4)

MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    m.Hello: st.builds(
        m.Hello,
        versions=st.lists(u64, max_size=5).map(tuple),
        node=text,
        incarnation=u64,
        nonce=nonce,
        role=text,
    ),
    m.Challenge: st.builds(m.Challenge, version=u64, nonce=blob, proof=blob),
    m.ChallengeResponse: st.builds(m.ChallengeResponse, proof=blob),
    m.Welcome: st.builds(m.Welcome, version=u64, node=text),
    m.Refused: st.builds(m.Refused, code=text, message=text),
    m.Call: st.builds(
        m.Call,
        request_id=u64,
        kind=text,
        key=text,
        method=text,
        payload=blob,
        timeout_ms=u64,
        headers=headers,
    ),
    m.Cast: st.builds(
        m.Cast, request_id=u64, kind=text, key=text, method=text, payload=blob, headers=headers
    ),
    m.Reply: st.builds(m.Reply, request_id=u64, payload=blob),
    m.Error: st.builds(
        m.Error,
        request_id=u64,
        code=text,
        message=text,
        definite=st.booleans(),
        remote_type=text,
        remote_traceback=text,
    ),
    m.Redirect: st.builds(m.Redirect, request_id=u64, owner=text, address=text),
    m.Ping: st.builds(m.Ping, seq=u64),
    m.Pong: st.builds(m.Pong, seq=u64),
    m.Goodbye: st.builds(m.Goodbye, reason=text),
}

any_message = st.one_of(*MESSAGE_STRATEGIES.values())


def test_strategies_cover_the_whole_union() -> None:
    assert set(MESSAGE_STRATEGIES) == set(m.Frame.__args__)


def test_every_message_is_frozen_tagged_and_array_like() -> None:
    tags = set()
    for cls in m.Frame.__args__:
        config = cls.__struct_config__
        assert config.frozen, cls
        assert config.array_like, cls
        assert isinstance(config.tag, str), cls
        tags.add(config.tag)
    assert len(tags) == len(m.Frame.__args__), "tags must be unique"


def test_supported_versions_include_current() -> None:
    assert m.PROTOCOL_VERSION in m.SUPPORTED_VERSIONS


@given(any_message)
def test_round_trip(msg: m.Frame) -> None:
    codec = WireCodec()
    decoded = codec.decode(codec.encode(msg))
    assert decoded == msg
    assert type(decoded) is type(msg)


@given(st.lists(any_message, max_size=10))
def test_one_codec_round_trips_many(msgs: list[m.Frame]) -> None:
    codec = WireCodec()
    assert [codec.decode(codec.encode(x)) for x in msgs] == msgs


def test_defaults_apply() -> None:
    codec = WireCodec()
    call = codec.decode(codec.encode(m.Call(1, "k", "key", "f", b"", 10)))
    assert isinstance(call, m.Call)
    assert call.headers == {}
    hello = m.Hello(versions=(1,), node="a", incarnation=0, nonce=b"n" * 16)
    assert hello.role == "member"
    assert m.Goodbye().reason == ""
    assert m.Error(1, "agent_error", "boom", True).remote_type == ""


def test_messages_are_compact() -> None:
    codec = WireCodec()
    assert len(codec.encode(m.Ping(1))) == 7


def test_error_codes_match_error_classes() -> None:
    # The codes an Error record carries are exactly the errors module's class attributes.
    for cls in (errors.AgentNotFound, errors.NoQuorum, errors.CallTimeout, errors.AgentError):
        record = m.Error(request_id=7, code=cls.code, message="x", definite=True)
        assert isinstance(errors.error_from_code(record.code, record.message), cls)


# --- evolution ---------------------------------------------------------------------------


class PingV2(msgspec.Struct, frozen=True, tag="ping", array_like=True):
    """A future Ping with an appended field, as the evolution rules allow."""

    seq: int
    sent_at_ms: int = 0


def test_old_decoder_ignores_appended_field() -> None:
    body = msgspec.msgpack.encode(PingV2(seq=3, sent_at_ms=99))
    assert WireCodec().decode(body) == m.Ping(3)


def test_new_decoder_fills_default_for_missing_field() -> None:
    body = WireCodec().encode(m.Ping(3))
    assert msgspec.msgpack.decode(body, type=PingV2) == PingV2(seq=3)


def test_a_cast_from_before_acknowledgements_decodes_as_fire_and_forget() -> None:
    old = msgspec.msgpack.encode(["cast", 5, "k", "key", "m", b"p", {}])
    cast = WireCodec().decode(old)
    assert isinstance(cast, m.Cast) and cast.timeout_ms == 0
    acked = m.Cast(5, "k", "key", "m", b"p", {}, 250)
    assert WireCodec().decode(WireCodec().encode(acked)) == acked


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "0 bytes"),
        (b"\xc1", "malformed"),
        (b"\x92\xa4ping", "truncated"),
        (msgspec.msgpack.encode(["nope", 1]), "Invalid value 'nope'"),
        (msgspec.msgpack.encode(["ping", -1]), ">= 0"),
        (msgspec.msgpack.encode(["ping", "one"]), "Expected `int`, got `str`"),
        (msgspec.msgpack.encode({"seq": 1}), "Expected `array`"),
        (msgspec.msgpack.encode(["hello", [1], "a", 0, b"short"]), "length >= 16"),
        (msgspec.msgpack.encode(["ping", 1]) + b"\x00", "trailing"),
    ],
)
def test_bad_bodies_raise_protocol_error(body: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError) as info:
        WireCodec().decode(body)
    assert needle in str(info.value)
    assert f"{len(body):,} bytes" in str(info.value)
    assert not isinstance(info.value, msgspec.MsgspecError)


def test_unknown_tag_is_protocol_error() -> None:
    class Future(msgspec.Struct, tag="zap", array_like=True):
        x: int

    with pytest.raises(ProtocolError, match="'zap'"):
        WireCodec().decode(msgspec.msgpack.encode(Future(1)))


@given(st.binary(max_size=64))
def test_garbage_never_leaks_msgspec_errors(body: bytes) -> None:
    # Anything but ProtocolError (DecodeError, ValueError, ...) fails the test.
    with contextlib.suppress(ProtocolError):
        WireCodec().decode(body)


def test_encode_out_of_range_is_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="cannot encode Ping"):
        WireCodec().encode(m.Ping(2**64))


# --- payloads ----------------------------------------------------------------------------

plain = st.recursive(
    st.none() | st.booleans() | i64 | st.floats(allow_nan=False) | text | blob,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@given(plain)
def test_payload_round_trip(obj: object) -> None:
    assert decode_payload(encode_payload(obj)) == obj


class Point(msgspec.Struct):
    x: int
    y: int


def test_payload_typed_decode() -> None:
    data = encode_payload([[Point(1, 2)], {"by": 3}])
    args, kwargs = decode_payload(data, tuple[list[Point], dict[str, int]])
    assert args == [Point(1, 2)]
    assert kwargs == {"by": 3}


def test_payload_type_mismatch_is_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="Expected `int`, got `str`"):
        decode_payload(encode_payload("x"), int)


def test_payload_garbage_is_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="1 bytes"):
        decode_payload(b"\xc1")


def test_payload_deep_nesting_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_payload(b"\x91" * 100_000 + b"\x00")


def test_payload_refuses_arbitrary_objects() -> None:
    # No pickle fallback: an arbitrary object is refused, never serialised.
    with pytest.raises(ProtocolError, match="object"):
        encode_payload(object())
