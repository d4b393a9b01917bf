"""Static seeds, the ``--discovery`` spec, and the poller under a manual clock.

The poller tests use in-memory providers and ``ManualClock(autojump=True)``: backoff
delays of many seconds and a provider that hangs forever run in milliseconds, and the
delays are read off the clock instead of being slept.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import cast

import pytest

from phoenix_cluster._foundation.env import Env, ManualClock
from phoenix_cluster._membership.discovery import (
    DiscoveryError,
    DiscoveryProvider,
    RegisteringProvider,
    StaticSeeds,
    join_host_port,
)
from phoenix_cluster._membership.discovery_poller import DiscoveryPoller
from phoenix_cluster._membership.discovery_spec import SPEC_FORMS, discovery_from_spec
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster.errors import ConfigError
from phoenix_cluster.testing import wait_until

# --- static seeds and the spec ------------------------------------------------------------


async def test_static_seeds_are_checked_deduplicated_and_sorted() -> None:
    seeds = StaticSeeds(["h2:7100", "h1:7100", " h2:7100", "[::1]:7100", "::1:7101"])
    assert await seeds.seeds() == ["[::1]:7100", "[::1]:7101", "h1:7100", "h2:7100"]
    assert isinstance(seeds, DiscoveryProvider)
    assert not isinstance(seeds, RegisteringProvider)
    assert repr(seeds) == "<StaticSeeds [::1]:7100,[::1]:7101,h1:7100,h2:7100>"
    async with seeds:
        pass
    assert join_host_port("fd00::1", 1) == "[fd00::1]:1"
    assert join_host_port("[fd00::1]", 1) == "[fd00::1]:1"


async def test_static_spec() -> None:
    seeds = discovery_from_spec("static:h1:7100,h2:7100")
    assert await seeds.seeds() == ["h1:7100", "h2:7100"]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "missing PROVIDER:ARGUMENTS"),
        ("static", "missing PROVIDER:ARGUMENTS"),
        ("static:h1", "expected HOST:PORT"),
        ("static:h1:0", "port in 1..65535"),
        ("static:h1:7100,", "expected HOST:PORT"),
        ("zookeeper:h1:2181", "unknown provider 'zookeeper'"),
        ("h1:7100", "unknown provider 'h1'"),
    ],
)
def test_bad_specs_name_the_key_and_the_forms(spec: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        discovery_from_spec(spec)
    err = info.value
    assert err.key == "discovery"
    assert why in str(err)
    assert f"(got {spec!r})" in str(err)
    for form in SPEC_FORMS:
        assert form in str(err)


def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "phoenix_cluster._membership.discovery_dns", raising=False)
    monkeypatch.setitem(sys.modules, "dns", None)
    with pytest.raises(ConfigError, match=r"needs dnspython \(import dns failed\): "
                                          r"pip install 'phoenix-cluster\[dns\]'$") as info:
        discovery_from_spec("dns:srv:_phoenix._tcp.example.local")
    assert info.value.key == "discovery"


# --- the poller ---------------------------------------------------------------------------


class ScriptedProvider:
    """Answers from a script: a list of seeds, an exception to raise, or "hang"."""

    def __init__(self, clock: ManualClock, script: list[object]) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[float] = []
        self.closed = False
        self.hung = 0

    async def seeds(self) -> list[str]:
        self.calls.append(self.clock.monotonic())
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if step == "hang":
            self.hung += 1
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        return cast(list[str], step)  # may be nonsense on purpose

    async def aclose(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return "<ScriptedProvider>"


class ScriptedRegistrar(ScriptedProvider):
    def __init__(self, clock: ManualClock, script: list[object], register_fails: int) -> None:
        super().__init__(clock, script)
        self.register_fails = register_fails
        self.registered: list[tuple[str, str]] = []
        self.deregistered = 0
        self.hang_deregister = False

    async def register(self, name: str, address: str) -> None:
        if self.register_fails:
            self.register_fails -= 1
            raise DiscoveryError("scripted: register refused")
        self.registered.append((name, address))

    async def deregister(self) -> None:
        self.deregistered += 1
        if self.hang_deregister:
            await asyncio.Event().wait()


def _env() -> tuple[Env, ManualClock]:
    clock = ManualClock(autojump=True)
    return Env(clock=clock, random=random.Random(4)), clock


async def test_poller_delivers_only_changed_deduplicated_lists_without_self() -> None:
    env, clock = _env()
    provider = ScriptedProvider(clock, [
        ["b:1", "a:1", "a:1"], ["a:1", "b:1"], ["a:1", "b:1", "me:1"], ["c:1", "me:1"],
        ["c:1"],
    ])
    got: list[list[str]] = []
    async with DiscoveryPoller(provider, env, got.append, interval_s=10,
                               exclude={"me:1"}) as poller:
        await wait_until(lambda: len(provider.calls) >= 6, what="six polls")
        stats = poller.statistics()
    assert got == [["a:1", "b:1"], ["c:1"]]
    assert stats.deliveries == 2 and stats.seeds == ("c:1",) and stats.failures == 0
    gaps = [b - a for a, b in zip(provider.calls, provider.calls[1:], strict=False)]
    assert all(9.0 <= g <= 10.0 for g in gaps), gaps  # interval minus up to 10 % jitter
    assert provider.closed  # the poller owns the provider


async def test_failures_back_off_log_once_and_recover(caplog: pytest.LogCaptureFixture) -> None:
    env, clock = _env()
    boom = DiscoveryError("etcd: POST http://127.0.0.1:2379/v3/kv/range: refused")
    provider = ScriptedProvider(clock, [boom, boom, boom, KeyError("bug"), ["a:1"], boom,
                                        ["a:1"]])
    got: list[list[str]] = []
    caplog.set_level(logging.DEBUG, logger="phoenix_cluster.membership")
    poller = DiscoveryPoller(provider, env, got.append, interval_s=60,
                             backoff=Backoff(base_s=1, max_s=4, jitter=0))
    async with poller:
        await wait_until(lambda: len(provider.calls) >= 5, what="recovery")
        assert got == [["a:1"]]
        assert poller.statistics().failure_streak == 0
        await wait_until(lambda: len(provider.calls) >= 7, what="second streak")
        stats = poller.statistics()
    gaps = [b - a for a, b in zip(provider.calls, provider.calls[1:], strict=False)]
    assert gaps[:4] == [1, 2, 4, 4]  # doubling, capped at max_s
    assert 54 <= gaps[4] <= 60  # healthy again: back to the interval
    assert gaps[5] == 1  # a new streak starts from base_s
    assert stats.failures == 5 and stats.deliveries == 1 and got == [["a:1"]]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per streak, not one per failure
    first = warnings[0].getMessage()
    assert "refused" in first and "<ScriptedProvider>" in first
    assert any("works again after 4 failures" in r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO)
    assert any("KeyError: 'bug'" in r.getMessage() for r in caplog.records)


async def test_a_hanging_provider_is_cut_off_by_the_deadline() -> None:
    env, clock = _env()
    provider = ScriptedProvider(clock, ["hang", "hang", ["a:1"]])
    got: list[list[str]] = []
    poller = DiscoveryPoller(provider, env, got.append, interval_s=30, timeout_s=5,
                             backoff=Backoff(base_s=2, max_s=2, jitter=0))
    async with poller:
        await wait_until(lambda: bool(got), what="seeds after two hangs")
        stats = poller.statistics()
    assert provider.hung == 2 and stats.timeouts == 2 and stats.failure_streak == 0
    assert provider.calls == [0, 7, 14]  # 5 s deadline + 2 s backoff, twice


async def test_poll_once_never_raises_and_start_never_blocks() -> None:
    env, clock = _env()
    provider = ScriptedProvider(clock, ["hang"])
    poller = DiscoveryPoller(provider, env, lambda seeds: None, timeout_s=1)
    await poller.start()  # returns at once although the provider hangs
    assert "running" in repr(poller)
    assert await poller.poll_once() is False
    assert poller.statistics().last_error == "seeds: no answer within 1s"
    await poller.aclose()
    assert "closed" in repr(poller)
    with pytest.raises(RuntimeError, match="closed"):
        await poller.start()
    with pytest.raises(ConfigError):
        DiscoveryPoller(provider, env, lambda seeds: None, interval_s=0)
    # A provider that answers nonsense is a failure like any other, not a crash.
    odd = ScriptedProvider(clock, [None])
    poller = DiscoveryPoller(odd, env, lambda seeds: None)
    assert await poller.poll_once() is False
    assert poller.statistics().last_error == "seeds: expected a list, got None"


async def test_a_stuck_callback_is_cut_off_and_offered_the_list_again() -> None:
    env, clock = _env()
    provider = ScriptedProvider(clock, [["a:1"]])
    calls: list[list[str]] = []

    async def on_seeds(seeds: list[str]) -> None:
        calls.append(seeds)
        if len(calls) == 1:
            await asyncio.Event().wait()  # the node's side hangs once

    async with DiscoveryPoller(provider, env, on_seeds, interval_s=5, timeout_s=2):
        await wait_until(lambda: len(calls) >= 2, what="redelivery")
    assert calls == [["a:1"], ["a:1"]]


async def test_a_failing_callback_gets_the_same_list_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, clock = _env()
    provider = ScriptedProvider(clock, [["a:1"]])
    calls: list[list[str]] = []

    async def on_seeds(seeds: list[str]) -> None:
        calls.append(seeds)
        if len(calls) == 1:
            raise RuntimeError("node busy")

    async with DiscoveryPoller(provider, env, on_seeds, interval_s=5) as poller:
        await wait_until(lambda: len(calls) >= 2, what="redelivery")
        await wait_until(lambda: len(provider.calls) >= 4, what="more polls")
    assert calls == [["a:1"], ["a:1"]]
    assert poller.statistics().deliveries == 1
    assert "on_seeds callback failed" in caplog.text


async def test_registration_is_retried_then_undone_within_a_deadline() -> None:
    env, clock = _env()
    provider = ScriptedRegistrar(clock, [["a:1", "me:1"]], register_fails=2)
    assert isinstance(provider, RegisteringProvider)
    got: list[list[str]] = []
    poller = DiscoveryPoller(provider, env, got.append, interval_s=30, timeout_s=3,
                             register=("me", "me:1"), exclude={"me:1"},
                             backoff=Backoff(base_s=1, max_s=1, jitter=0))
    async with poller:
        # Seeds are delivered even while registration still fails.
        await wait_until(lambda: bool(got), what="seeds")
        assert got == [["a:1"]] and not poller.statistics().registered
        await wait_until(lambda: poller.statistics().registered, what="registration")
        assert provider.registered == [("me", "me:1")]
        assert poller.statistics().failure_streak == 0
        provider.hang_deregister = True
        start = clock.monotonic()
    assert provider.deregistered == 1 and provider.closed
    assert clock.monotonic() - start == pytest.approx(3)  # a hung deregister is cut off
