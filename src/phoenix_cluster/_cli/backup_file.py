"""The backup file of ``phx backup`` / ``phx restore``: written as a stream, checked whole.

Layout (all integers big-endian)::

    b"PHXBACKUP\\n"                               magic, 10 bytes
    frame H   Header(format, phoenix, created, source)
    frame R   BackupRecord(kind, key, state)      one per agent, any order
    ...
    frame T   Trailer(records, kinds, state_bytes, sha256)

    frame = tag (1 byte) | length of payload (4 bytes) | payload (msgpack) | crc32 (4 bytes)

The crc32 covers the tag and the payload, so a flipped bit is caught at its frame; the
trailer's ``sha256`` covers every byte before the trailer, and its counts say how many
records there are, so a file cut at a frame boundary, or with frames dropped or
repeated, is refused too. Nothing may follow the trailer.

:func:`validate` reads the whole file once, holding one frame at a time, and raises
:class:`BackupFileError` (one line) at the first problem; ``phx restore`` calls it before
it writes anything. :class:`BackupWriter` writes to ``FILE.partial`` and renames it to
``FILE`` once the trailer is on disk, so a backup that failed leaves no file that looks
whole.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, TypeVar

import msgspec

from .._version import __version__

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BackupFileError",
    "BackupRecord",
    "BackupSummary",
    "BackupWriter",
    "Header",
    "Trailer",
    "read_records",
    "validate",
]

MAGIC = b"PHXBACKUP\n"
FORMAT_VERSION = 1
"""The format this ``phx`` writes; it reads this one and older ones."""
MAX_FRAME_BYTES = 64 << 20
"""No frame is longer: a length above it is corruption (a record is at most
``max_record_bytes``, 4 MiB by default)."""

_HEADER, _RECORD, _TRAILER = b"H", b"R", b"T"
_PREFIX = struct.Struct(">cI")
_CRC = struct.Struct(">I")
_T = TypeVar("_T")


class Header(msgspec.Struct, frozen=True):
    format: int
    phoenix: str
    created: str
    source: str


class BackupRecord(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    key: str
    state: bytes


class Trailer(msgspec.Struct, frozen=True):
    records: int
    kinds: dict[str, int]
    state_bytes: int
    sha256: str


class BackupFileError(ValueError):
    """The file is not a whole, intact backup this ``phx`` can read (one line)."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a checked backup holds."""

    header: Header
    records: int
    kinds: dict[str, int]
    state_bytes: int
    file_bytes: int


class BackupWriter:
    """Writes a backup to ``path`` as records arrive (nothing is kept in memory).

    Use as a context manager: :meth:`finish` writes the trailer and renames the file into
    place; leaving the block without it removes the partial file.
    """

    def __init__(self, path: str | os.PathLike[str], source: str) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file: BinaryIO = self._partial.open("wb")
        self._digest = hashlib.sha256()
        self._kinds: Counter[str] = Counter()
        self.records = 0
        self.state_bytes = 0
        self.bytes_written = 0
        self._finished = False
        self._write(MAGIC)
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._frame(_HEADER, Header(FORMAT_VERSION, __version__, created, source))

    def add(self, kind: str, key: str, state: bytes) -> None:
        self._frame(_RECORD, BackupRecord(kind, key, state))
        self._kinds[kind] += 1
        self.records += 1
        self.state_bytes += len(state)

    @property
    def kinds(self) -> dict[str, int]:
        return dict(self._kinds)

    def finish(self) -> None:
        """Write the trailer, flush to disk and move the file into place."""
        trailer = Trailer(self.records, dict(sorted(self._kinds.items())), self.state_bytes,
                          self._digest.hexdigest())
        self._frame(_TRAILER, trailer)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)
        self._finished = True

    def _frame(self, tag: bytes, value: msgspec.Struct) -> None:
        payload = msgspec.msgpack.encode(value)
        crc = zlib.crc32(payload, zlib.crc32(tag))
        self._write(_PREFIX.pack(tag, len(payload)) + payload + _CRC.pack(crc))

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.bytes_written += len(data)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._finished:
            self._file.close()
            self._partial.unlink(missing_ok=True)


def validate(path: str | os.PathLike[str]) -> BackupSummary:
    """Read the whole file and check every frame, the counts and the digest.

    Raises:
        BackupFileError: it is not a whole, intact backup (the message says what is
            wrong and where).
        OSError: it cannot be read.
    """
    kinds: Counter[str] = Counter()
    state_bytes = 0
    header: Header | None = None
    with open(path, "rb") as f:
        for offset, tag, payload, digest in _frames(f):
            if header is None:
                if tag != _HEADER:
                    raise BackupFileError(f"corrupt: no header frame at byte {offset}")
                header = _decode(payload, Header, offset)
                if header.format > FORMAT_VERSION:
                    raise BackupFileError(
                        f"format version {header.format} is newer than this phx reads "
                        f"({FORMAT_VERSION}): use phx {header.phoenix} or newer")
                continue
            if tag == _RECORD:
                record = _decode(payload, BackupRecord, offset)
                kinds[record.kind] += 1
                state_bytes += len(record.state)
            elif tag == _TRAILER:
                trailer = _decode(payload, Trailer, offset)
                _check_trailer(trailer, digest, kinds, state_bytes)
                end = f.tell()
                if f.read(1):
                    raise BackupFileError(f"corrupt: bytes after the trailer (byte {end})")
                return BackupSummary(header, trailer.records, dict(kinds), state_bytes, end)
            else:
                raise BackupFileError(f"corrupt: unknown frame {tag!r} at byte {offset}")
    raise BackupFileError(f"truncated: the file ends after {sum(kinds.values())} records "
                          "without its trailer")


def read_records(path: str | os.PathLike[str]) -> Iterator[BackupRecord]:
    """The records of a file :func:`validate` accepted (checked again as they are read)."""
    with open(path, "rb") as f:
        for offset, tag, payload, _ in _frames(f):
            if tag == _RECORD:
                yield _decode(payload, BackupRecord, offset)


def _check_trailer(trailer: Trailer, digest: str, kinds: Counter[str],
                   state_bytes: int) -> None:
    count = sum(kinds.values())
    if trailer.records != count or trailer.kinds != dict(kinds):
        raise BackupFileError(f"corrupt: the trailer counts {trailer.records} records, "
                              f"the file holds {count}")
    if trailer.state_bytes != state_bytes or trailer.sha256 != digest:
        raise BackupFileError("corrupt: the file's checksum does not match its trailer")


def _frames(f: IO[bytes]) -> Iterator[tuple[int, bytes, bytes, str]]:
    """``(offset, tag, payload, sha256 of every byte before this frame)`` of each frame
    after the magic, checking lengths and crc32s."""
    digest = hashlib.sha256()
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
            raise BackupFileError(f"truncated: the file ends after {len(magic)} bytes, "
                                  "before its header")
        raise BackupFileError(f"not a Phoenix backup (its first bytes are not {MAGIC!r})")
    digest.update(magic)
    offset = len(magic)
    while True:
        prefix = f.read(_PREFIX.size)
        if not prefix:
            return
        if len(prefix) < _PREFIX.size:
            raise BackupFileError(f"truncated: the file ends inside the frame at byte {offset}")
        tag, length = _PREFIX.unpack(prefix)
        if length > MAX_FRAME_BYTES:
            raise BackupFileError(f"corrupt: the frame at byte {offset} claims {length:,} "
                                  "bytes")
        rest = f.read(length + _CRC.size)
        if len(rest) < length + _CRC.size:
            raise BackupFileError(f"truncated: the file ends inside the frame at byte {offset}")
        payload = rest[:length]
        (crc,) = _CRC.unpack(rest[length:])
        if zlib.crc32(payload, zlib.crc32(tag)) != crc:
            raise BackupFileError(f"corrupt: checksum mismatch in the frame at byte {offset}")
        yield offset, tag, payload, digest.hexdigest()
        digest.update(prefix)
        digest.update(rest)
        offset += len(prefix) + len(rest)


def _decode(payload: bytes, type_: type[_T], offset: int) -> _T:
    try:
        return msgspec.msgpack.decode(payload, type=type_)
    except msgspec.DecodeError as exc:
        raise BackupFileError(f"corrupt: the frame at byte {offset} does not decode: "
                              f"{exc}") from None
