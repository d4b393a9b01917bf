"""The backup file (``_cli/backup_file.py``): what is written reads back, and a damaged,
cut or foreign file is refused with one line saying what is wrong."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import msgspec
import pytest

from phoenix_cluster._cli.backup_file import (
    FORMAT_VERSION,
    MAGIC,
    BackupFileError,
    BackupWriter,
    read_records,
    validate,
)

RECORDS = [("acct", f"k{i}", f"state {i}".encode() * (i % 4)) for i in range(50)] + [
    ("profile", "p1", b""), ("profile", "p\u00e9\n2", bytes(range(256)))]


def write(path: Path) -> Path:
    with BackupWriter(path, source="127.0.0.1:7000") as writer:
        for kind, key, state in RECORDS:
            writer.add(kind, key, state)
        writer.finish()
    return path


def test_a_backup_reads_back_record_by_record(tmp_path: Path) -> None:
    path = write(tmp_path / "b.phxb")
    summary = validate(path)
    assert summary.records == len(RECORDS)
    assert summary.kinds == {"acct": 50, "profile": 2}
    assert summary.state_bytes == sum(len(s) for _, _, s in RECORDS)
    assert summary.file_bytes == path.stat().st_size
    assert summary.header.format == FORMAT_VERSION
    assert summary.header.source == "127.0.0.1:7000"
    assert [(r.kind, r.key, r.state) for r in read_records(path)] == RECORDS
    assert list(tmp_path.iterdir()) == [path], "no partial file left"


def test_an_empty_backup_is_valid(tmp_path: Path) -> None:
    with BackupWriter(tmp_path / "e.phxb", source="s") as writer:
        writer.finish()
    assert validate(tmp_path / "e.phxb").records == 0


def test_a_backup_left_unfinished_leaves_no_file(tmp_path: Path) -> None:
    def back_up_then_fail() -> None:
        with BackupWriter(tmp_path / "b.phxb", source="s") as writer:
            writer.add("acct", "k", b"x")
            raise RuntimeError("the cluster went away")

    with pytest.raises(RuntimeError):
        back_up_then_fail()
    assert list(tmp_path.iterdir()) == []


def refused(path: Path) -> str:
    with pytest.raises(BackupFileError) as caught:
        validate(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_file_cut_anywhere_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "b.phxb").read_bytes()
    cut = tmp_path / "cut.phxb"
    # Every cut point of the first frames and the trailer, and a sample in between.
    points = [*range(0, 64), *range(64, len(data) - 80, 97), *range(len(data) - 80, len(data))]
    for n in points:
        cut.write_bytes(data[:n])
        message = refused(cut)
        assert message.startswith("truncated"), (n, message)


def test_a_flipped_byte_anywhere_is_refused(tmp_path: Path) -> None:
    data = bytearray(write(tmp_path / "b.phxb").read_bytes())
    bad = tmp_path / "bad.phxb"
    for i in [*range(len(MAGIC), len(data), 7), len(data) - 1]:
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        bad.write_bytes(bytes(flipped))
        message = refused(bad)
        assert message.startswith(("corrupt", "truncated")), (i, message)


def test_a_dropped_or_repeated_record_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "b.phxb").read_bytes()
    # The first record frame follows the header frame (kind, length, payload, checksum).
    # Searching for its kind byte instead found one in the header's checksum whenever
    # the creation time made one.
    header_length = int.from_bytes(data[len(MAGIC) + 1:len(MAGIC) + 5], "big")
    first = len(MAGIC) + 9 + header_length
    assert data[first:first + 1] == b"R"
    length = int.from_bytes(data[first + 1:first + 5], "big")
    frame = data[first:first + 9 + length]
    for edited in (data.replace(frame, b"", 1), data.replace(frame, frame * 2, 1)):
        path = tmp_path / "edited.phxb"
        path.write_bytes(edited)
        assert "trailer counts" in refused(path)


def test_foreign_files_and_newer_formats_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello, this is not a backup at all\n")
    assert refused(foreign).startswith("not a Phoenix backup")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert refused(empty).startswith("truncated")

    data = write(tmp_path / "b.phxb").read_bytes()
    header = msgspec.msgpack.encode({"format": FORMAT_VERSION + 1, "phoenix": "9.0",
                                     "created": "", "source": ""})
    frame = (struct.pack(">cI", b"H", len(header)) + header
             + struct.pack(">I", zlib.crc32(header, zlib.crc32(b"H"))))
    newer = tmp_path / "newer.phxb"
    newer.write_bytes(MAGIC + frame)
    assert "newer than this phx reads" in refused(newer)
    extra = tmp_path / "extra.phxb"
    extra.write_bytes(data + b"\x00")
    assert "after the trailer" in refused(extra)
