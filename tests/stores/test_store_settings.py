"""``--store NAME=URL``, ``PHX_STORES`` and ``Node(stores=...)``: parsed, checked, and
bad ones refused in one line (exit 2) with passwords hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_node import free_port, node_env, run_phx

from phoenix_cluster._foundation.settings import load_settings


@pytest.mark.parametrize(("flag", "expected"), [
    ("main=mysql://app:pw123@db/x", "store 'main' has URL 'mysql://app:***@db/x'"),
    ("main", "expected NAME=URL, got 'main'"),
    ("=sqlite:///x.db", "a store name must be a non-empty string"),
])
def test_a_bad_store_flag_is_one_line_and_exit_2(tmp_path: Path, flag: str,
                                                 expected: str) -> None:
    result = run_phx("node", "--listen", f"127.0.0.1:{free_port()}", "--store", flag,
                     cwd=tmp_path, env=node_env(PHX_COOKIE="store-cookie"))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("phx node: error: bad setting stores: ")
    assert expected in line and "pw123" not in line


def test_phx_stores_environment_variable() -> None:
    settings = load_settings(environ={
        "PHX_STORES": "main=sqlite:///var/lib/a.db, pg=postgresql://u@h:5432/d"})
    assert settings.stores == {"main": "sqlite:///var/lib/a.db", "pg": "postgresql://u@h:5432/d"}
