"""``phx node`` forming and joining a cluster: READY means it serves; failing to join exits 4.

Real ``phx node`` processes on loopback. A node seeded with its own address forms a
cluster of one and serves; the first seed forms one when the others do not answer; a
node whose seeds are unreachable, or that holds the wrong cookie, never says READY, logs
which seed failed and why, and exits 4 after ``--join-timeout``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents_for_cli import CliCounter
from cli_helpers import phx as run_cli
from test_cli_node import STOP_DEADLINE_S, NodeProcess, free_port, node_env

import phoenix_cluster as phx
from phoenix_cluster._cli.node import EXIT_NOT_JOINED, NOT_JOINED_PREFIX, exit_code_for

pytestmark = pytest.mark.slow

COOKIE = "join-test-cookie-7f3a9c"
FIRST_CALL_WITHIN_S = 2.0


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for p in started:
        p.close()


def start(nodes: list[NodeProcess], tmp_path: Path, *args: str,
          cookie: str = COOKIE) -> NodeProcess:
    p = NodeProcess(*args, "--import", "agents_for_cli", cwd=tmp_path,
                    env=node_env(PHX_COOKIE=cookie))
    nodes.append(p)
    return p


def logged(p: NodeProcess, text: str, timeout: float = 20.0) -> bool:
    """Whether ``text`` shows up in ``p``'s stderr within ``timeout`` (stderr is read by
    its own thread, so a line logged before READY may arrive after it)."""
    deadline = time.monotonic() + timeout
    while text not in p.stderr():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def exit_code(p: NodeProcess, timeout: float = 60.0) -> int:
    code = p.proc.wait(timeout=timeout)
    for t in p._threads:
        t.join(timeout=STOP_DEADLINE_S)
    return code


async def first_call_after(address: str, ready_at: float, deadline_s: float) -> float:
    """Seconds from ``ready_at`` to the first call the cluster at ``address`` served."""
    async with phx.Node(role="client", seeds=[address], cookie=COOKIE) as client:
        last: Exception | None = None
        while time.monotonic() - ready_at < deadline_s:
            try:
                assert await client.ref(CliCounter, "first").increment(1) >= 1
                return time.monotonic() - ready_at
            except phx.PhoenixError as exc:
                last = exc
                await asyncio.sleep(0.02)
        raise AssertionError(f"no call served within {deadline_s}s of READY: {last!r}")


async def test_a_node_seeded_with_itself_forms_a_cluster_and_serves(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = start(nodes, tmp_path, "--name", "n0", "--listen", address, "--seed", address)
    assert first.wait_ready() == "n0"
    ready_at = time.monotonic()
    elapsed = await first_call_after(address, ready_at, deadline_s=10.0)
    assert elapsed < FIRST_CALL_WITHIN_S, f"first call served {elapsed:.2f}s after READY"
    assert logged(first, "n0 formed a cluster of one")
    # Later nodes get the same seed list and join it.
    second = start(nodes, tmp_path, "--name", "n1", "--listen", f"127.0.0.1:{free_port()}",
                   "--seed", address)
    assert second.wait_ready() == "n1"
    assert logged(second, "n1 joined the cluster")
    async with phx.Node(role="client", seeds=[address], cookie=COOKIE) as client:
        for i in range(20):
            assert await client.ref(CliCounter, f"k{i}").increment(2) == 2
        hosts = {await client.where(client.ref(CliCounter, f"k{i}")) for i in range(20)}
    assert hosts == {"n0", "n1"}


async def test_the_first_seed_forms_the_cluster_when_the_others_do_not_answer(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    address, absent = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    p = NodeProcess("--name", "first", "--listen", address, "--seed", address,
                    "--seed", absent, "--import", "agents_for_cli", cwd=tmp_path,
                    env=node_env(PHX_COOKIE=COOKIE, PHX_SEED_TIMEOUT_S="1"))
    nodes.append(p)
    assert p.wait_ready() == "first"
    await first_call_after(address, time.monotonic(), deadline_s=10.0)
    assert logged(p, f"cannot join through seed {absent}: unreachable")
    assert logged(p, "as the first seed it forms a new cluster of one")
    # A node that is not the first seed never forms a cluster of its own.
    other = start(nodes, tmp_path, "--name", "second", "--listen", absent,
                  "--seed", address, "--seed", absent, "--join-timeout", "30")
    assert other.wait_ready() == "second"
    assert logged(other, "second joined the cluster")


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_http(url: str, p: NodeProcess, deadline_s: float = 30.0) -> tuple[int, dict[str, object]]:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline or p.proc.poll() is not None:
                raise
            time.sleep(0.05)


def test_unreachable_seeds_are_not_ready_and_exit_4_after_the_join_timeout(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    absent = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    p = start(nodes, tmp_path, "--name", "lonely", "--listen", f"127.0.0.1:{free_port()}",
              "--seed", absent, "--http", http, "--join-timeout", "4")
    status, body = _wait_http(f"http://{http}/health/ready", p)
    assert status == 503
    assert "not joined" in str(body["reason"])
    assert exit_code(p) == 4
    assert p.stdout.get(timeout=STOP_DEADLINE_S) is None, "said READY without a cluster"
    err = p.stderr()
    assert f"cannot join through seed {absent}: unreachable" in err
    errors = [line for line in p.stderr_lines if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "joined no cluster within 4s" in errors[0] and absent in errors[0]
    assert "Traceback" not in err


def test_a_wrong_cookie_is_named_and_exits_4(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    address = f"127.0.0.1:{free_port()}"
    good = start(nodes, tmp_path, "--name", "good", "--listen", address, "--seed", address)
    assert good.wait_ready() == "good"
    wrong = "a-different-cookie-91b2"
    bad = start(nodes, tmp_path, "--name", "bad", "--listen", f"127.0.0.1:{free_port()}",
                "--seed", address, "--join-timeout", "3", cookie=wrong)
    assert exit_code(bad) == 4
    assert bad.stdout.get(timeout=STOP_DEADLINE_S) is None, "said READY with a wrong cookie"
    err = bad.stderr()
    assert f"cannot join through seed {address}: wrong cluster secret (cookie)" in err
    assert wrong not in err and COOKIE not in err
    assert "Traceback" not in err


def test_exit_code_for_a_node_that_joined_nothing() -> None:
    assert exit_code_for(f"{NOT_JOINED_PREFIX}seed a:1: unreachable") == EXIT_NOT_JOINED == 4


def test_help_lists_every_exit_code() -> None:
    result = run_cli("node", "--help", timeout=60)
    assert result.returncode == 0
    text = result.stdout
    for code, meaning in [(0, "graceful"), (1, "failed"), (2, "configuration"),
                          (3, "downed by split-brain"), (4, "joined no cluster")]:
        assert any(line.strip().startswith(f"{code} ") and meaning in line
                   for line in text.splitlines()), (code, text)
    assert "--join-timeout" in text


def test_a_client_without_seeds_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli("node", "--role", "client", timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "a client node needs --seed or --discovery" in line


async def test_a_client_node_is_ready_once_it_sees_a_member(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    client = start(nodes, tmp_path, "--name", "c", "--role", "client", "--seed", address,
                   "--listen", f"127.0.0.1:{free_port()}")
    member = start(nodes, tmp_path, "--name", "m", "--listen", address, "--seed", address)
    assert member.wait_ready() == "m"
    assert client.wait_ready() == "c"
    assert logged(client, "c joined the cluster")
