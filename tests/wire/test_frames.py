"""Length-prefixed framing: any chunking yields exactly the frames; bad headers fail early."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_cluster._wire.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    encode_frame,
    pack_frames,
)
from phoenix_cluster.errors import ConfigError, ProtocolError

bodies_st = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


def test_encode_frame_layout() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_default_max() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024
    assert FrameDecoder().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES


@given(bodies_st)
def test_pack_frames_equals_concatenated_encode_frame(bodies: list[bytes]) -> None:
    assert pack_frames(bodies) == b"".join(encode_frame(b) for b in bodies)


@given(bodies_st, st.data())
def test_any_split_yields_exactly_the_frames(bodies: list[bytes], data: st.DataObject) -> None:
    stream = pack_frames(bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    assert out == bodies
    assert decoder.buffered_bytes == 0


def test_byte_at_a_time() -> None:
    bodies = [b"a", b"bc" * 100, b"d"]
    decoder = FrameDecoder()
    out = [body for byte in pack_frames(bodies) for body in decoder.feed(bytes([byte]))]
    assert out == bodies


def test_many_small_frames_in_one_feed() -> None:
    bodies = [i.to_bytes(4, "big") for i in range(50_000)]
    decoder = FrameDecoder()
    assert decoder.feed(pack_frames(bodies)) == bodies


def test_large_frame_in_small_chunks() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_frame(body)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), 1000):
        out.extend(decoder.feed(stream[i : i + 1000]))
    assert out == [body]


def test_partial_tail_is_kept() -> None:
    decoder = FrameDecoder()
    stream = encode_frame(b"one") + encode_frame(b"two")
    assert decoder.feed(stream[:-1]) == [b"one"]
    assert decoder.buffered_bytes == 6
    assert decoder.feed(stream[-1:]) == [b"two"]
    assert decoder.feed(b"") == []


def test_oversized_rejected_from_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=8 * 1024 * 1024)
    header = (9 * 1024 * 1024).to_bytes(4, "big")
    with pytest.raises(ProtocolError) as info:
        decoder.feed(header)
    assert str(info.value) == "frame of 9,437,184 bytes exceeds max_frame_bytes 8,388,608"


def test_oversized_rejected_when_header_is_split() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    header = (11).to_bytes(4, "big")
    assert decoder.feed(header[:2]) == []
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(header[2:])


def test_exact_max_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(encode_frame(b"x" * 10, max_frame_bytes=10)) == [b"x" * 10]


def test_frames_before_a_bad_header_are_not_delivered_after_it() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(b"ok") + (99).to_bytes(4, "big"))


def test_zero_length_frame() -> None:
    with pytest.raises(ProtocolError, match="zero-length"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_poisoned_after_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="already broken"):
        decoder.feed(encode_frame(b"fine"))
    assert "broken" in repr(decoder)


def test_encode_frame_limits() -> None:
    with pytest.raises(ProtocolError, match="zero-length"):
        encode_frame(b"")
    with pytest.raises(ProtocolError, match="exceeds max_frame_bytes 4"):
        encode_frame(b"12345", max_frame_bytes=4)
    with pytest.raises(ProtocolError, match="exceeds"):
        pack_frames([b"ok", b"toolong"], max_frame_bytes=4)


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_bad_max_frame_bytes(bad: int) -> None:
    with pytest.raises(ConfigError, match="max_frame_bytes"):
        FrameDecoder(max_frame_bytes=bad)


def test_repr_shows_counts() -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.feed(encode_frame(b"a") + b"\x00\x00")
    assert repr(decoder) == "<FrameDecoder [1 frames, 2 bytes buffered, max 1,000] ok>"
