"""``phx bench local`` and ``phx demo --single`` run end to end, as a user would run them.

Both run in a subprocess (a fresh interpreter, the real console script code path). No
assertion on timing beyond sanity: the figures belong to ``docs/benchmarks.md``, not to
a noisy test machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import numbers as json_numbers
from cli_helpers import phx


def test_bench_local_quick_saves_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "results" / "local.json"
    proc = phx("bench", "local", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "call latency p95" in proc.stdout

    results = json.loads(out.read_text())
    machine = results["machine"]
    assert machine["cpu_count"] > 0
    assert machine["python"].count(".") == 2
    assert isinstance(machine["uvloop"], bool)
    assert machine["loop"].startswith("uvloop" if machine["uvloop"] else "asyncio")
    assert machine["quick"] is True
    assert machine["date"]

    assert set(results["call_latency"]) >= {"p50_us", "p95_us", "p99_us"}
    assert results["call_latency"]["p50_us"] <= results["call_latency"]["p99_us"]
    assert set(results["failing_call_latency"]) >= {"p50_us", "p95_us", "p99_us"}
    for where in ("distinct_agents", "shared_agent"):
        assert set(results["call_throughput_per_s"][where]) == {"1", "100", "1000"}
    assert set(results["cast_throughput_per_s"]) == {"1_agent", "100_agents"}
    assert results["activations_per_s"] > 0
    assert set(results["memory"]) == {
        "agents",
        "active_rss_bytes_per_agent",
        "active_tracemalloc_bytes_per_agent",
        "passive_rss_bytes_per_agent",
        "passive_tracemalloc_bytes_per_agent",
    }

    numbers = json_numbers({k: v for k, v in results.items() if k != "machine"})
    assert len(numbers) >= 20
    not_positive = [(path, value) for path, value in numbers if not value > 0]
    assert not not_positive


def test_bench_local_asyncio_loop(tmp_path: Path) -> None:
    out = tmp_path / "asyncio.json"
    proc = phx("bench", "local", "--quick", "--loop", "asyncio", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    machine = json.loads(out.read_text())["machine"]
    assert machine["loop"] == "asyncio"
    assert machine["uvloop"] is False


def test_demo_single_short_run_checks_invariants() -> None:
    proc = phx("demo", "--single", "--duration", "3", "--agents", "300")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "150 accounts and 150 counters" in out
    # Not a terminal: plain progress lines instead of the live table.
    assert "calls/s" in out
    assert "\x1b[" not in out
    summary = out[out.index("Summary:") :]
    assert "money: 150,000 expected, 150,000 found: invariant OK" in summary
    assert summary.count("invariant OK") == 2
    assert "INVARIANT VIOLATED" not in out
    assert "failures injected after a debit" in summary


@pytest.mark.parametrize("args", [["bench", "local", "--help"], ["demo", "--help"]])
def test_help(args: list[str]) -> None:
    proc = phx(*args, timeout=30.0)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def test_cli_import_stays_cheap() -> None:
    code = (
        "import sys, phoenix_cluster._cli.commands\n"
        "heavy = [m for m in ('phoenix_cluster._cli.bench_local',"
        " 'phoenix_cluster._cli.demo_agents', 'phoenix_cluster._cli.demo_cluster',"
        " 'phoenix_cluster._cli.demo_single') if m in sys.modules]\n"
        "print(heavy)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
