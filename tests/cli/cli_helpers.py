"""Helpers shared by the CLI tests: run ``phx`` in a subprocess, walk JSON figures."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def phx(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m phoenix_cluster ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def numbers(data: Any, path: str = "$") -> list[tuple[str, float]]:
    """Every number in a JSON document with its path (booleans are not numbers)."""
    if isinstance(data, bool):
        return []
    if isinstance(data, int | float):
        return [(path, float(data))]
    if isinstance(data, dict):
        return [n for k, v in data.items() for n in numbers(v, f"{path}.{k}")]
    return []
