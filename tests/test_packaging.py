"""Packaging matches the layers: the core installs with msgspec (and uvloop) only, the
optional parts sit behind extras, and each missing extra is one line naming it.

The wheel is built from this checkout with hatchling (no network); the "without the
extras" runs hide the optional packages behind an import blocker in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from phoenix_cluster._foundation.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[1]

CORE_REQUIRES = [
    "msgspec>=0.19",
    "uvloop>=0.21; sys_platform != 'win32' and platform_python_implementation == 'CPython'",
]
OPTIONAL = ("aiohttp", "click", "rich", "prometheus_client")

# Run first in the child (as sitecustomize): imports of the modules named in
# PHX_TEST_HIDE fail as they would if the package were not installed.
BLOCKER = '''
import os, sys

HIDDEN = set(os.environ.get("PHX_TEST_HIDE", "").split(","))


class HideOptional:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideOptional())
'''


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from hatchling.build import build_wheel; "
         "print(build_wheel(sys.argv[1]))", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out / proc.stdout.strip().splitlines()[-1]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(wheel.read(name).decode())
    return [(key, value) for key, value in meta.items()
            if key in ("Requires-Dist", "Provides-Extra")]


def _requires(meta: list[tuple[str, str]], extra: str | None) -> list[str]:
    found = []
    for key, value in meta:
        if key != "Requires-Dist":
            continue
        has_extra = "extra ==" in value
        if extra is None and not has_extra:
            found.append(value)
        elif extra is not None and value.endswith(f"extra == '{extra}'"):
            found.append(value.split(";")[0])
    return sorted(found)


def test_core_wheel_requires_only_the_runtime(wheel_metadata: list[tuple[str, str]]) -> None:
    assert _requires(wheel_metadata, None) == CORE_REQUIRES


def test_extras_give_the_optional_parts(wheel_metadata: list[tuple[str, str]]) -> None:
    assert _requires(wheel_metadata, "cli") == ["click>=8.1", "rich>=13.7"]
    assert _requires(wheel_metadata, "web") == ["aiohttp>=3.9", "prometheus-client>=0.20"]
    assert _requires(wheel_metadata, "bench") == ["click>=8.1", "rich>=13.7"]
    assert _requires(wheel_metadata, "demo") == ["aiohttp>=3.9", "click>=8.1",
                                                 "prometheus-client>=0.20", "rich>=13.7"]
    everything = set(_requires(wheel_metadata, "all"))
    for extra in EXTRA_MODULES:
        assert set(_requires(wheel_metadata, extra)) <= everything, extra


def test_every_checked_extra_exists_in_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(EXTRA_MODULES) <= set(declared)
    assert set(declared) - set(EXTRA_MODULES) == {"all", "discovery", "docs", "test"}


def _run_hidden(tmp_path: Path, hide: tuple[str, ...], *args: str,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PHX_TEST_HIDE=",".join(hide),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]))
    return subprocess.run([sys.executable, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, check=False)


QUICKSTART = '''
import asyncio, sys
import phoenix_cluster as phx


class Counter(phx.Agent):
    def __init__(self) -> None:
        self.count = 0

    async def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count


async def main() -> None:
    try:
        import aiohttp  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the blocker let aiohttp through")
    async with phx.Node() as node:
        assert await node.ref(Counter, "alice").increment(5) == 5
        assert await node.ref(Counter, "alice").increment() == 6
    try:
        phx.Node(http="127.0.0.1:0")
    except phx.ConfigError as exc:
        print("http:", exc.key, exc)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                    ("aiohttp", "click", "rich", "prometheus_client"))
    print("loaded:", loaded)


asyncio.run(main())
'''


def test_core_runs_an_embedded_node_without_the_extras(tmp_path: Path) -> None:
    proc = _run_hidden(tmp_path, OPTIONAL, "-c", QUICKSTART)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "loaded: []"
    assert lines[0].startswith("http: http bad setting http: the HTTP endpoint needs the 'web' "
                               "extra (aiohttp is not installed): "
                               "pip install 'phoenix-cluster[web]'"), lines


@pytest.mark.parametrize(("hide", "args", "line"), [
    (("click",), ["--help"],
     "phx: error: this command needs the 'cli' extra (click is not installed): "
     "pip install 'phoenix-cluster[cli]'"),
    (("rich",), ["demo", "--quick"],
     "phx: error: phx demo needs the 'demo' extra (rich is not installed): "
     "pip install 'phoenix-cluster[demo]'"),
    (("aiohttp",), ["demo", "--quick"],
     "phx: error: phx demo needs the 'demo' extra (aiohttp is not installed): "
     "pip install 'phoenix-cluster[demo]'"),
    (("rich",), ["bench", "local", "--quick"],
     "phx: error: phx bench needs the 'bench' extra (rich is not installed): "
     "pip install 'phoenix-cluster[bench]'"),
    (("rich",), ["status", "--seed", "127.0.0.1:1"],
     "phx: error: phx status needs the 'cli' extra (rich is not installed): "
     "pip install 'phoenix-cluster[cli]'"),
    (("aiohttp", "prometheus_client"),
     ["node", "--name", "n1", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
     "phx node: error: bad setting http: the HTTP endpoint needs the 'web' extra "
     "(aiohttp is not installed): pip install 'phoenix-cluster[web]'"),
])
def test_missing_extra_is_one_line_naming_it(tmp_path: Path, hide: tuple[str, ...],
                                             args: list[str], line: str) -> None:
    proc = _run_hidden(tmp_path, hide, "-m", "phoenix_cluster", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [line]
    assert proc.stdout == ""


def test_local_cluster_without_the_cli_extra_names_it(tmp_path: Path) -> None:
    code = ("from phoenix_cluster.testing import LocalCluster\n"
            "try:\n    LocalCluster(1)\n"
            "except ImportError as exc:\n    print(type(exc).__name__, exc.name, exc)\n")
    proc = _run_hidden(tmp_path, ("click",), "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "MissingExtra click LocalCluster (it runs phx node processes) needs the 'cli' extra "
        "(click is not installed): pip install 'phoenix-cluster[cli]'")


@pytest.mark.parametrize(("hide", "flags", "extra"), [
    (("dns",), ["--discovery", "dns:srv:phoenix.local"], "dns"),
    (("aiohttp",), ["--discovery", "etcd:http://127.0.0.1:2379/phx"], "etcd"),
    (("h2",), ["--transports", "http2"], "http2"),
    (("aioquic",), ["--transports", "quic"], "quic"),
    (("opentelemetry",), ["--otlp-endpoint", "http://127.0.0.1:4318"], "otel"),
])
def test_node_names_each_missing_extra(tmp_path: Path, hide: tuple[str, ...],
                                       flags: list[str], extra: str) -> None:
    (tmp_path / "cookie").write_text("a-test-cookie-of-enough-length-0123456789")
    (tmp_path / "cookie").chmod(0o600)
    proc = _run_hidden(tmp_path, hide, "-m", "phoenix_cluster", "node", "--name", "n1",
                       "--listen", "127.0.0.1:0", "--cookie-file", str(tmp_path / "cookie"),
                       *flags)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("phx node: error: "), proc.stderr
    assert f"pip install 'phoenix-cluster[{extra}]'" in last
