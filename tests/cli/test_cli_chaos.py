"""``phx chaos`` runs the checker end to end as a user would, and says the seed."""

from __future__ import annotations

import pytest
from cli_helpers import phx

pytestmark = pytest.mark.slow


def test_phx_chaos_short_run_passes_and_prints_its_seed() -> None:
    proc = phx("chaos", "--minutes", "0.1", "--seed", "3", "--keys", "8", "--workers", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "seed 3:" in proc.stdout
    assert "nemesis:" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1] == "result: OK (seed 3)"
