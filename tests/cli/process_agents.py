"""An agent kind that reports on the ``phx node`` process hosting it (CLI tests)."""

from __future__ import annotations

import gc

import phoenix_cluster as phx


class CliProcessInfo(phx.Agent, kind="cli_tests.process_info"):
    async def gc_thresholds(self) -> list[int]:
        return list(gc.get_threshold())
