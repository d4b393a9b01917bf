"""The HTTP/2 frame-length check (``_transport/http2_frames.py``): a peer announcing a
frame longer than MAX_FRAME_SIZE is refused at its 9-byte header, however the bytes are
chunked, before any of the frame's body is buffered."""

from __future__ import annotations

from phoenix_cluster._transport.http2_frames import FrameLengthScan

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _header(length: int) -> bytes:
    return length.to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")


def test_frames_within_the_limit_pass_and_their_bodies_are_skipped() -> None:
    scan = FrameLengthScan(16, skip=len(PREFACE))
    # A body byte that would read as a huge length if the scan lost the boundaries.
    stream = PREFACE + _header(16) + b"\xff" * 16 + _header(0) + _header(3) + b"abc"
    assert scan.feed(stream) is None


def test_an_oversized_frame_is_refused_at_its_header_even_byte_by_byte() -> None:
    scan = FrameLengthScan(16)
    stream = _header(4) + b"abcd" + _header(17)
    results = [scan.feed(stream[i:i + 1]) for i in range(len(stream))]
    assert results[:-1] == [None] * (len(stream) - 1)
    assert results[-1] == "invalid HTTP/2: frame of 17 bytes exceeds MAX_FRAME_SIZE 16"
