"""Fuzzing the receive path: arbitrary bytes into the frame decoder, then the codec.

``test_frames.py`` checks that valid streams decode in any chunking, and
``test_messages_codec.py`` that short garbage bodies fail as ``ProtocolError``. Here the
input is hostile throughout: arbitrary byte streams (and streams mixing valid frames with
garbage, bad headers and truncation) in arbitrary chunkings, against a reference model
of the framing, and msgpack arrays that look like messages (real tags, wrong fields).
"""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import HEADER_BYTES, FrameDecoder, encode_frame
from phoenix_cluster._wire.messages import Frame
from phoenix_cluster.errors import ProtocolError

TAGS = [cls.__struct_config__.tag for cls in Frame.__args__]


def reference(stream: bytes, max_frame_bytes: int) -> tuple[list[bytes], bool]:
    """What a whole ``stream`` holds: its complete frames up to the first bad header,
    and whether such a header (zero or above the maximum) arrives."""
    bodies: list[bytes] = []
    offset = 0
    while len(stream) - offset >= HEADER_BYTES:
        length = int.from_bytes(stream[offset : offset + HEADER_BYTES], "big")
        if length == 0 or length > max_frame_bytes:
            return bodies, True
        start = offset + HEADER_BYTES
        if len(stream) - start < length:
            break
        bodies.append(stream[start : start + length])
        offset = start + length
    return bodies, False


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


frame_piece = st.one_of(
    st.binary(min_size=1, max_size=80).map(encode_frame),  # a valid frame
    st.binary(max_size=40),  # raw garbage
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),  # any header
    st.binary(min_size=1, max_size=80).map(lambda b: encode_frame(b)[:-1]),  # truncated
)
streams = st.one_of(st.binary(max_size=600),
                    st.lists(frame_piece, max_size=12).map(b"".join))


@settings(max_examples=400)
@given(streams, st.lists(st.integers(0, 700), max_size=20), st.integers(1, 200))
def test_any_bytes_any_chunking_match_the_reference(
    stream: bytes, cuts: list[int], max_frame_bytes: int
) -> None:
    expected, broken = reference(stream, max_frame_bytes)
    decoder = FrameDecoder(max_frame_bytes)
    delivered: list[bytes] = []
    failed = False
    for chunk in chunked(stream, cuts):
        try:
            bodies = decoder.feed(chunk)  # anything but ProtocolError fails the test
        except ProtocolError:
            failed = True
            break
        assert all(1 <= len(b) <= max_frame_bytes for b in bodies)
        delivered += bodies
        # At most one unfinished frame is ever held: memory is bounded by the maximum.
        assert decoder.buffered_bytes < HEADER_BYTES + max_frame_bytes
    assert failed == broken
    if broken:
        # Frames finished in an earlier chunk were delivered; none after the bad header.
        assert delivered == expected[: len(delivered)]
        with pytest.raises(ProtocolError, match="already broken"):
            decoder.feed(encode_frame(b"ok"))
    else:
        assert delivered == expected
        consumed = sum(HEADER_BYTES + len(b) for b in expected)
        assert decoder.buffered_bytes == len(stream) - consumed


@settings(max_examples=200)
@given(streams, st.lists(st.integers(0, 700), max_size=20))
def test_decoder_then_codec_raise_only_protocol_error(stream: bytes, cuts: list[int]) -> None:
    """The whole receive path of a connection: frames, then messages."""
    decoder, codec = FrameDecoder(256), WireCodec()
    with contextlib.suppress(ProtocolError):
        for chunk in chunked(stream, cuts):
            for body in decoder.feed(chunk):
                assert isinstance(codec.decode(body), Frame.__args__)


msgpack_int = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry at all
field_value = st.one_of(
    st.none(), st.booleans(), msgpack_int, st.floats(),
    st.text(max_size=20), st.binary(max_size=70),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), msgpack_int),
                    max_size=3),
)


@settings(max_examples=400)
@given(st.one_of(st.sampled_from(TAGS), st.text(max_size=6), msgpack_int, st.none()),
       st.lists(field_value, max_size=9))
def test_message_lookalikes_decode_or_fail_cleanly(tag: object, fields: list[object]) -> None:
    """A real (or near) tag with fields of any type, count and range."""
    body = msgspec.msgpack.encode([tag, *fields])
    try:
        msg = WireCodec().decode(body)
    except ProtocolError as exc:
        error = str(exc)
    else:
        assert isinstance(msg, Frame.__args__)
        assert msg.__struct_config__.tag == tag
        return
    assert f"{len(body):,} bytes" in error
