"""``ClusterNode.log()`` reads only what the node appended since the last call (tests
and benchmarks poll it every few milliseconds), and still returns the whole log."""

from __future__ import annotations

from pathlib import Path

from phoenix_cluster.testing._cluster_node import ClusterNode


def test_the_log_grows_with_what_the_node_appends_split_characters_included(
        tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    node = ClusterNode(0, "node-0", "127.0.0.1:7100", path)
    assert node.log() == ""  # not written yet
    encoded = "déjà vu\n".encode()
    path.write_bytes(encoded[:2])  # ends inside the two bytes of "é"
    assert node.log() == "d"
    with path.open("ab") as file:
        file.write(encoded[2:] + b"READY\n")
    assert node.log() == "déjà vu\nREADY\n"
    assert node.log() == "déjà vu\nREADY\n"  # nothing new: the same text


def test_a_log_file_replaced_by_a_shorter_one_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    node = ClusterNode(0, "node-0", "127.0.0.1:7100", path)
    path.write_text("first life, a long line\n")
    assert node.log() == "first life, a long line\n"
    path.write_text("second\n")
    assert node.log() == "second\n"
