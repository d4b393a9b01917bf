"""Operator hygiene: secrets never in a log line or a repr, INFO logs summarise, and a
busy port is one line on stderr with exit code 2."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from careless_agents import CarelessCounter
from test_cli_node import free_port, node_env, run_phx

import phoenix_cluster as phx
from phoenix_cluster._cli.node import EXIT_CONFIG
from phoenix_cluster._cli.node_lifecycle import run_node
from phoenix_cluster.testing import LocalCluster

CONSUL_TOKEN = "consul-acl-token-3b9e51"


@pytest.mark.slow
async def test_a_cluster_run_never_logs_a_secret_and_info_lines_summarise() -> None:
    async with LocalCluster(3, ["careless_agents"],
                            env={"CONSUL_HTTP_TOKEN": CONSUL_TOKEN}) as cluster:
        client = await cluster.client()
        for i in range(60):
            await client.ref(CarelessCounter, f"k{i}").increment(1)
        await cluster.stop(2)             # a graceful leave: hundreds of partitions move
        await cluster.start_node(2)       # and back
        await cluster.wait_converged()
        cluster.kill(1)                   # a crash
        await cluster.wait(1)
        await cluster.start_node(1)
        await cluster.wait_converged()
        logs = {n.name: n.log() for n in cluster.nodes}
        cookie = cluster.cookie
    for name, log in logs.items():
        assert cookie not in log, f"{name} logged the cookie"
        assert CONSUL_TOKEN not in log, f"{name} logged the Consul token"
        assert "careless: cookie ***, consul token ***" in log, name
        assert "careless malformed %d %d [unformattable log call: TypeError" in log, name
        assert "Traceback" not in log and "--- Logging error ---" not in log, name
        info = [line for line in log.splitlines() if " INFO " in line]
        # One line per membership change, not one per partition (there are 4,096).
        assert not [line for line in info if "partition " in line and "serving" in line
                    and "partitions" not in line], name
        assert len(info) < 80, f"{name}: {len(info)} INFO lines:\n" + "\n".join(info)
    summaries = [line for log in logs.values() for line in log.splitlines()
                 if "stopped serving partitions: " in line]
    assert summaries, "a moving partition table is summarised"
    assert all(re.search(r"stopped serving partitions: \d+ \(\w+: \d+", s) for s in summaries)


def _walk(obj: Any, seen: set[int], path: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """``(path, repr)`` of every object reachable from ``obj`` within a few hops."""
    if id(obj) in seen or depth > 5:
        return
    seen.add(id(obj))
    if isinstance(obj, str | bytes | int | float | bool) or obj is None:
        return  # a raw value: its repr is itself, no component shows it
    try:
        yield path, repr(obj)
    except Exception:  # some objects cannot repr half-closed; not what is tested
        return
    if isinstance(obj, dict):
        items: list[tuple[str, Any]] = [(f"[{k!r}]", v) for k, v in list(obj.items())[:64]]
    elif isinstance(obj, list | tuple | set | frozenset):
        items = [(f"[{i}]", v) for i, v in enumerate(list(obj)[:64])]
    else:
        attrs: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    attrs[slot] = getattr(obj, slot)
        items = [(f".{k}", v) for k, v in attrs.items()]
    for suffix, value in items:
        yield from _walk(value, seen, path + suffix, depth + 1)


async def test_no_component_repr_shows_the_cookie() -> None:
    secret = "repr-secret-cookie-77aa"
    async with phx.Node(name="r", listen="127.0.0.1:0", http="127.0.0.1:0",
                        cookie=secret) as node:
        shown = [(p, r) for p, r in _walk(node, set(), "node")
                 if secret in r or secret.encode().hex() in r]
        assert repr(node.settings).count("***") >= 1
    assert shown == []


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a listening TCP socket and a bound UDP socket on it."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))
        yield port


@pytest.mark.parametrize("flag", ["--listen", "--http"])
def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path, busy_port: int, flag: str) -> None:
    args = ["--listen", f"127.0.0.1:{free_port()}"] if flag == "--http" else []
    result = run_phx("node", *args, flag, f"127.0.0.1:{busy_port}", cwd=tmp_path,
                     env=node_env(PHX_COOKIE="busy-port-cookie"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    key = flag.removeprefix("--")
    assert lines[0].startswith(f"phx node: error: bad setting {key}: cannot listen on "
                               f"127.0.0.1:{busy_port}")
    assert "in use" in lines[0]
    assert "READY" not in result.stdout


def test_a_port_taken_after_the_check_is_still_one_line_and_exit_2(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # The race the pre-start check cannot close: the node's own bind fails.
    settings = msgspec.convert({"listen": f"127.0.0.1:{busy_port}", "cookie": "c" * 16},
                               phx.Settings)
    assert run_node(phx.Node(settings=settings), 0) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"phx node: error: cannot listen on 127.0.0.1:{busy_port}: ")
    assert "in use" in line


@pytest.mark.parametrize("where", ["file", "proc"])
def test_an_unusable_data_dir_is_one_line_and_exit_2(tmp_path: Path, where: str) -> None:
    if where == "file":
        (tmp_path / "a-file").write_text("not a directory\n")
        data_dir = str(tmp_path / "a-file" / "state")
    else:
        data_dir = "/proc/phoenix-state"  # cannot be created, even by root
    result = run_phx("node", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data_dir,
                     cwd=tmp_path, env=node_env(PHX_COOKIE="data-dir-cookie"))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"phx node: error: bad setting data_dir: cannot use {data_dir!r}")


@pytest.mark.parametrize(("args", "expected"), [
    (["--split-brain", "lease"], "split_brain = lease needs the lease service"),
    (["--split-brain", "lease", "--split-brain-lease", "zk:host/key"], "unknown provider 'zk'"),
])
def test_a_lease_strategy_without_a_usable_lease_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run_phx("node", "--listen", f"127.0.0.1:{free_port()}", *args, cwd=tmp_path,
                     env=node_env(PHX_COOKIE="lease-cookie"))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("phx node: error: bad setting split_brain_lease: "), line
    assert expected in line, line
