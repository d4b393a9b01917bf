"""Frame bodies ↔ message Structs, and agent payloads ↔ bytes. msgpack only, never pickle.

msgspec errors stop here: whatever a peer sends, callers above L1 see only
:class:`~phoenix_cluster.errors.ProtocolError` (STYLE 3.7), whose message keeps msgspec's
precise "expected / got / at" text and adds the size of what arrived.

Nothing on the wire is unpickled (DESIGN principle 5): a pickle lets the sender run code on
the receiver, so one leaked cookie would become remote code execution on every node.
msgpack decodes to plain data and typed Structs only.

Must not import anything above L0; no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from phoenix_cluster.errors import ProtocolError

from .messages import Frame

__all__ = ["WireCodec", "decode_payload", "encode_payload"]

# An encoding failure is our caller's bug (an int past 64 bits, an unsupported type), but it
# still must not leak msgspec's exception types out of L1.
_ENCODE_ERRORS = (msgspec.EncodeError, TypeError, ValueError, OverflowError)
# RecursionError: msgspec refuses very deeply nested input instead of crashing.
# ValueError covers UnicodeDecodeError: msgspec lets invalid UTF-8 in a str through as one.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, ValueError)


class WireCodec:
    """Encodes and decodes frame bodies for one connection.

    Build one per connection and reuse it: msgspec's Encoder keeps a reusable output buffer
    and the Decoder compiles the :data:`~.messages.Frame` union once (msgspec
    ``docs/perf-tips.rst``). Not thread-safe; a connection is owned by one event loop.
    """

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)

    def encode(self, msg: Frame) -> bytes:
        """Encode one message as a frame body (without the length prefix).

        Raises:
            ProtocolError: a field holds a value msgpack cannot carry (e.g. an int ≥ 2**64).
        """
        try:
            return self._encoder.encode(msg)
        except _ENCODE_ERRORS as exc:
            raise ProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from exc

    def decode(self, body: bytes) -> Frame:
        """Decode one frame body into its message.

        Raises:
            ProtocolError: the body is not msgpack, has an unknown tag, or a field has the
                wrong type or range; the message names what arrived.
        """
        try:
            return self._decoder.decode(body)
        except _DECODE_ERRORS as exc:
            raise ProtocolError(f"invalid frame body of {len(body):,} bytes: {exc}") from exc

    def __repr__(self) -> str:
        return "<WireCodec msgpack>"


_payload_encoder = msgspec.msgpack.Encoder()
_payload_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def encode_payload(obj: object) -> bytes:
    """Encode call arguments or a result as msgpack.

    Local calls go through this too, so code that works on one node works on a cluster.

    Args:
        obj: plain data (None, bool, int, float, str, bytes, list, tuple, dict) or msgspec
            Structs, nested freely.

    Raises:
        ProtocolError: ``obj`` holds something msgpack cannot carry; nothing was sent.
    """
    try:
        return _payload_encoder.encode(obj)
    except _ENCODE_ERRORS as exc:
        raise ProtocolError(f"cannot encode payload of type {type(obj).__name__}: {exc}") from exc


def decode_payload(data: bytes, type: Any = Any) -> Any:
    """Decode a payload produced by :func:`encode_payload`.

    Args:
        data: the msgpack bytes.
        type: what to decode into and validate against (e.g. a Struct, ``list[int]``);
            the default ``Any`` gives plain dicts, lists and scalars.

    Raises:
        ProtocolError: ``data`` is not msgpack or does not match ``type``.
    """
    try:
        if type is Any:
            return _payload_decoder.decode(data)
        return msgspec.msgpack.decode(data, type=type)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"invalid payload of {len(data):,} bytes: {exc}") from exc
