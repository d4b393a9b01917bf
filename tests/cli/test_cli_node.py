"""``phx node`` as users run it: real subprocesses, real signals, real config files."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import phoenix_cluster as phx
from phoenix_cluster._cli.node import exit_code_for
from phoenix_cluster._foundation.settings import load_settings

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"

START_DEADLINE_S = 60.0  # a cold interpreter on a loaded CI box can be slow to import
STOP_DEADLINE_S = 20.0
SECRET = "s3cr3t-cookie-value-4c1d"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any PHX_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SRC)])
    env.update(extra)
    return env


def phx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "phoenix_cluster", *args]


def run_phx(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a ``phx`` command that is expected to exit on its own."""
    return subprocess.run(
        phx_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True,
        timeout=START_DEADLINE_S, check=False,
    )


class NodeProcess:
    """A running ``phx node`` whose output lines can be awaited with a deadline."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            phx_cmd("node", *args), cwd=cwd, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.put(line.rstrip("\n"))
        self.stdout.put(None)  # EOF: the process is gone

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = START_DEADLINE_S) -> str:
        """Wait for the ``READY <name>`` line; return the name."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no READY line within {timeout}s; stderr: {self.stderr()}")
            try:
                line = self.stdout.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=STOP_DEADLINE_S)
                raise AssertionError(
                    f"phx node exited ({self.proc.returncode}) before READY; "
                    f"stderr: {self.stderr()}"
                )
            if line.startswith("READY "):
                return line.removeprefix("READY ").split()[0]

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` and wait (with a deadline) for the exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=STOP_DEADLINE_S)
        for t in self._threads:
            t.join(timeout=STOP_DEADLINE_S)
        return code

    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_DEADLINE_S)
        for t in self._threads:
            t.join(timeout=STOP_DEADLINE_S)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


StartNode = Callable[..., NodeProcess]


@pytest.fixture
def start_node() -> Iterator[StartNode]:
    """Start ``phx node`` processes; every one is killed at the end, whatever happened."""
    started: list[NodeProcess] = []

    def start(*args: str, cwd: Path, env: dict[str, str]) -> NodeProcess:
        p = NodeProcess(*args, cwd=cwd, env=env)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.close()


def listen_flag() -> list[str]:
    return ["--listen", f"127.0.0.1:{free_port()}"]


# --------------------------------------------------------------------------- version


def test_version(tmp_path: Path) -> None:
    result = run_phx("--version", cwd=tmp_path, env=node_env())
    assert result.returncode == 0, result.stderr
    assert phx.__version__ in result.stdout
    assert "phx" in result.stdout


# --------------------------------------------------------------------------- precedence


def test_load_settings_precedence_flag_env_toml(tmp_path: Path) -> None:
    toml = tmp_path / "phoenix.toml"
    toml.write_text('name = "from-toml"\ncall_timeout_s = 7.5\nrole = "client"\n')
    only_toml = load_settings({}, environ={}, config_file=toml)
    assert only_toml.name == "from-toml"
    assert (only_toml.call_timeout_s, only_toml.role) == (7.5, "client")

    env = {"PHX_NAME": "from-env", "PHX_CALL_TIMEOUT_S": "2", "PHX_SEEDS": "a:1, b:2"}
    env_wins = load_settings({}, environ=env, config_file=toml)
    assert (env_wins.name, env_wins.call_timeout_s, env_wins.role) == ("from-env", 2.0, "client")
    assert env_wins.seeds == ["a:1", "b:2"]

    overrides = {"name": "from-flag", "call_timeout_s": None}
    flags = load_settings(overrides, environ=env, config_file=toml)
    assert (flags.name, flags.call_timeout_s) == ("from-flag", 2.0)  # None means "unset"

    assert load_settings({}, environ={}).call_timeout_s == 5.0  # the documented default


def test_load_settings_node_table_and_phx_config(tmp_path: Path) -> None:
    toml = tmp_path / "elsewhere.toml"
    toml.write_text('[node]\nname = "tabled"\nmailbox_limit = 3\n')
    s = load_settings({}, environ={"PHX_CONFIG": str(toml)})
    assert (s.name, s.mailbox_limit) == ("tabled", 3)


@pytest.mark.parametrize(
    ("env_name", "flag_name", "expected"),
    [
        (None, None, "from-toml"),
        ("from-env", None, "from-env"),
        ("from-env", "from-flag", "from-flag"),
    ],
)
def test_cli_precedence_flag_env_toml(
    tmp_path: Path,
    start_node: StartNode,
    env_name: str | None,
    flag_name: str | None,
    expected: str,
) -> None:
    (tmp_path / "phoenix.toml").write_text(
        f'[node]\nname = "from-toml"\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    env = node_env() if env_name is None else node_env(PHX_NAME=env_name)
    args = [] if flag_name is None else ["--name", flag_name]
    node = start_node(*args, cwd=tmp_path, env=env)
    assert node.wait_ready() == expected
    assert node.stop() == 0


@pytest.mark.parametrize("how", ["--config", "PHX_CONFIG"])
def test_cli_reads_named_config_file(tmp_path: Path, start_node: StartNode, how: str) -> None:
    conf = tmp_path / "conf" / "cluster.toml"
    conf.parent.mkdir()
    conf.write_text(f'name = "named-file"\nlisten = "127.0.0.1:{free_port()}"\n')
    if how == "--config":
        node = start_node("--config", str(conf), cwd=tmp_path, env=node_env())
    else:
        node = start_node(cwd=tmp_path, env=node_env(PHX_CONFIG=str(conf)))
    assert node.wait_ready() == "named-file"
    assert node.stop() == 0


# --------------------------------------------------------------------------- bad config


BAD_CASES = [
    pytest.param(["--listen", "nonsense"], {}, None, "listen", "HOST:PORT", id="flag-listen"),
    pytest.param(["--seed", "nohost"], {}, None, "seeds", "HOST:PORT", id="flag-seed"),
    pytest.param(["--http", "9100"], {}, None, "http", "HOST:PORT", id="flag-http"),
    pytest.param(["--role", "boss"], {}, None, "role", "member", id="flag-role"),
    pytest.param(["--mailbox-limit", "many"], {}, None, "mailbox_limit", "integer", id="flag-int"),
    pytest.param(["--idle-timeout-s", "0"], {}, None, "idle_timeout_s", "> 0", id="flag-zero"),
    pytest.param(["--log-format", "xml"], {}, None, "log_format", "json", id="flag-choice"),
    pytest.param([], {"PHX_CALL_TIMEOUT_S": "-1"}, None, "call_timeout_s", "> 0", id="env-neg"),
    pytest.param([], {"PHX_MAILBOX_LIMIT": "1.5"}, None, "mailbox_limit", "integer", id="env-int"),
    pytest.param([], {"PHX_SEEDS": "a:1,b"}, None, "seeds", "HOST:PORT", id="env-seeds"),
    pytest.param([], {}, 'name = "x"\nbogus_key = 1\n', "bogus_key", "known:", id="toml-unknown"),
    pytest.param([], {}, 'name = "unterminated\n', "phoenix.toml", "TOML", id="toml-malformed"),
    pytest.param([], {}, "[node]\nrole = 3\n", "role", "member", id="toml-type"),
    pytest.param(["--cookie-file", "missing.cookie"], {}, None, "cookie_file", "file", id="cookie"),
    pytest.param(["--http", "0.0.0.0:9100", "--http-public"], {}, None, "http_token",
                 "http_token_file", id="http-public-no-token"),
    pytest.param(["--http", "127.0.0.1:0", "--http-token-file", "missing.token"], {}, None,
                 "http_token_file", "file", id="http-token-file-missing"),
    pytest.param(["--bogus-flag"], {}, None, "--bogus-flag", "", id="unknown-flag"),
    pytest.param(["--tls-cert", "cert.pem"], {}, None, "tls_key", "tls_cert", id="tls-half"),
    pytest.param(["--tls-cert", "no.pem", "--tls-key", "no.key"], {}, None, "tls_cert",
                 "no such file", id="tls-missing"),
]


@pytest.mark.parametrize(("args", "env", "toml", "key", "form"), BAD_CASES)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None, key: str, form: str
) -> None:
    if toml is not None:
        (tmp_path / "phoenix.toml").write_text(toml)
    result = run_phx("node", *args, cwd=tmp_path, env=node_env(**env))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert form in lines[0]
    assert "Traceback" not in result.stderr
    assert "READY" not in result.stdout


def test_import_failure_names_the_module(tmp_path: Path) -> None:
    result = run_phx("node", "--import", "no.such.module", cwd=tmp_path, env=node_env())
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "no.such.module" in lines[0]
    assert "Traceback" not in result.stderr


def test_import_error_inside_the_module_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_agents.py").write_text("raise RuntimeError('boom at import')\n")
    result = run_phx("node", "--import", "broken_agents", cwd=tmp_path, env=node_env())
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "broken_agents" in result.stderr
    assert "boom at import" in result.stderr


# --------------------------------------------------------------------------- running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_node_imports_agents_runs_and_stops_gracefully(
    tmp_path: Path, start_node: StartNode, sig: signal.Signals
) -> None:
    node = start_node(
        "--name", "node-a", *listen_flag(), "--import", "agents_for_cli",
        cwd=tmp_path, env=node_env(),
    )
    assert node.wait_ready() == "node-a"
    assert node.proc.poll() is None  # still serving after READY
    assert node.stop(sig) == 0
    err = node.stderr()
    assert "phx node node-a ready" in err
    assert "role member, 3 kinds imported" in err
    assert f"stopped: signal {sig.name}" in err
    assert "Traceback" not in err


def test_working_directory_modules_are_importable(tmp_path: Path, start_node: StartNode) -> None:
    (tmp_path / "local_agents.py").write_text(
        "import phoenix_cluster as phx\n\n"
        "class Local(phx.Agent, kind='cli_tests.local'):\n"
        "    async def ping(self) -> str:\n"
        "        return 'pong'\n"
    )
    env = node_env()
    env["PYTHONPATH"] = str(SRC)  # only the working directory can provide local_agents
    node = start_node("--name", "cwd-node", *listen_flag(), "--import", "local_agents",
                      cwd=tmp_path, env=env)
    assert node.wait_ready() == "cwd-node"
    assert node.stop() == 0
    assert "1 kind imported" in node.stderr()


def test_json_log_format_is_parseable(tmp_path: Path, start_node: StartNode) -> None:
    node = start_node(
        "--name", "json-node", *listen_flag(), "--log-format", "json", "--log-level", "DEBUG",
        cwd=tmp_path, env=node_env(),
    )
    assert node.wait_ready() == "json-node"
    assert node.stop() == 0
    records = [json.loads(line) for line in node.stderr_lines]
    assert records, "expected log records on stderr"
    for r in records:
        assert {"ts", "level", "logger", "node", "msg"} <= r.keys()
        assert r["node"] == "json-node"
        assert r["ts"].endswith("Z")
    assert any("ready" in r["msg"] for r in records)


def test_cookie_never_reaches_the_log(tmp_path: Path, start_node: StartNode) -> None:
    node = start_node(
        "--name", "secret-node", *listen_flag(), "--import", "agents_for_cli",
        cwd=tmp_path, env=node_env(PHX_COOKIE=SECRET, CLI_TEST_LOG_COOKIE=SECRET),
    )
    assert node.wait_ready() == "secret-node"
    assert node.stop() == 0
    err = node.stderr()
    assert "careless user code logs the cookie: ***" in err
    assert SECRET not in err


def test_cookie_file_is_read_and_redacted(tmp_path: Path, start_node: StartNode) -> None:
    cookie = tmp_path / "cluster.cookie"
    cookie.write_text(SECRET + "\n")
    cookie.chmod(0o600)
    node = start_node(
        "--name", "cookie-node", *listen_flag(), "--cookie-file", str(cookie),
        "--import", "agents_for_cli",
        cwd=tmp_path, env=node_env(CLI_TEST_LOG_COOKIE=SECRET),
    )
    assert node.wait_ready() == "cookie-node"
    assert node.stop() == 0
    err = node.stderr()
    assert "careless user code logs the cookie: ***" in err
    assert SECRET not in err


def test_empty_cookie_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty.cookie").write_text("\n")
    result = run_phx("node", "--cookie-file", "empty.cookie", cwd=tmp_path, env=node_env())
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "cookie_file" in result.stderr


def test_exit_code_for_stop_reason() -> None:
    assert exit_code_for("signal SIGTERM") == 0
    assert exit_code_for("signal SIGINT") == 0
    assert exit_code_for("services failed: passivation crashed 6 times") == 1
    assert exit_code_for("shutdown") == 1


def test_a_downed_node_that_knew_nobody_else_exits_instead_of_rejoining() -> None:
    # Rejoining needs another member to join through; alone it would form a cluster of
    # its own (a second cluster), so it exits with code 3 instead.
    from phoenix_cluster._cli.node_lifecycle import rejoining
    from phoenix_cluster._node import DOWNED_PREFIX

    lonely = phx.Node(name="lonely", listen="127.0.0.1:7199", cookie="x" * 32)
    assert lonely.settings.on_downed == "rejoin"
    assert rejoining(lonely, f"{DOWNED_PREFIX}keep-majority: minority") is None


@pytest.mark.slow
async def test_a_serving_node_collects_garbage_less_often() -> None:
    from process_agents import CliProcessInfo

    from phoenix_cluster._foundation.gc_tuning import OLDER_THRESHOLD, YOUNG_THRESHOLD
    from phoenix_cluster.testing import LocalCluster

    async with LocalCluster(1, ["process_agents"]) as cluster:
        client = await cluster.client()
        thresholds = await client.ref(CliProcessInfo, "node").gc_thresholds()
    assert thresholds == [YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD]
