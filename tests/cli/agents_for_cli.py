"""Agent kinds that ``phx node --import agents_for_cli`` registers in the CLI tests."""

from __future__ import annotations

import logging
import os

import phoenix_cluster as phx


class CliCounter(phx.Agent, kind="cli_tests.counter"):
    def __init__(self) -> None:
        self.count = 0

    async def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count


class CliGreeter(phx.Agent, kind="cli_tests.greeter"):
    def __init__(self) -> None:
        self.greeted = 0

    async def greet(self, who: str) -> str:
        self.greeted += 1
        return f"hello {who}"


class CliLoudCounter(CliCounter, kind="cli_tests.loud_counter"):
    async def increment(self, by: int = 1) -> int:
        return await super().increment(by * 10)


# Lets a test check that the cookie never reaches the log, even if user code logs it.
if os.environ.get("CLI_TEST_LOG_COOKIE"):
    logging.getLogger("agents_for_cli").warning(
        "careless user code logs the cookie: %s", os.environ["CLI_TEST_LOG_COOKIE"]
    )
