"""Polls a discovery provider and hands the node fresh seed lists, never its failures.

A cluster that is running must not care that etcd, DNS or the Kubernetes API is down, so
:class:`DiscoveryPoller` stands between the provider and the node:

- every call to the provider is bounded by ``timeout_s`` on the node's clock, so a hung
  backend costs one timeout per poll, never a stuck node;
- a failure (any ``Exception``, timeouts included) is retried with jittered
  :class:`~phoenix_cluster._resilience.backoff.Backoff`, logged once per streak at WARNING
  and once at INFO when the provider works again;
- ``on_seeds`` is called only when the (deduplicated, sorted) list changes, so the node
  never sees the same answer twice in a row; if the callback raises, the same list is
  offered again after the next poll.

The poller owns the provider: :meth:`DiscoveryPoller.aclose` deregisters (bounded by the
same timeout) and closes it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster._transport.tasks import TaskSet, fail_after
from phoenix_cluster.errors import ConfigError

from .discovery import DiscoveryError, DiscoveryProvider, RegisteringProvider, unique_sorted

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DiscoveryPoller", "DiscoveryStatistics"]

_T = TypeVar("_T")


class _Failed:
    __slots__ = ()


_FAILED = _Failed()

_log = logging.getLogger("phoenix_cluster.membership")


@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    """What the poller has seen.

    Attributes:
        polls: completed polls, successful or not.
        failures: failed polls (timeouts included) since start.
        timeouts: provider calls that the deadline cut short.
        failure_streak: failed polls in a row right now (0 when healthy).
        deliveries: times ``on_seeds`` was called with a new list.
        seeds: the last list delivered.
        registered: this node's registration with the provider succeeded.
        last_error: the latest failure's text ("" after a success).
    """

    polls: int
    failures: int
    timeouts: int
    failure_streak: int
    deliveries: int
    seeds: tuple[str, ...]
    registered: bool
    last_error: str


class DiscoveryPoller:
    """Ask ``provider`` for seeds every ``interval_s`` and pass changes to ``on_seeds``.

    Args:
        provider: where seeds come from; the poller closes it in :meth:`aclose`.
        env: the node's clock (intervals, deadlines) and randomness (jitter).
        on_seeds: called with the new sorted, deduplicated list whenever it changes (sync
            or async; an async one is cut off after ``timeout_s`` and offered the list
            again after the next poll).
        interval_s: time between successful polls (10 % jitter). Shorter finds new
            nodes sooner and loads the backend more; membership gossip covers the rest.
        backoff: delays after failures in a row; default 0.5 s doubling to 30 s.
        timeout_s: deadline for each provider call.
        register: ``(name, address)`` to announce this node with a registering provider
            (etcd, Consul); retried each poll until it succeeds. Ignored by the others.
        exclude: addresses never delivered (this node's own).
    """

    def __init__(
        self,
        provider: DiscoveryProvider,
        env: Env,
        on_seeds: Callable[[list[str]], object],
        interval_s: float = 10.0,
        backoff: Backoff | None = None,
        *,
        timeout_s: float = 5.0,
        register: tuple[str, str] | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        if not interval_s > 0 or not timeout_s > 0:
            raise ConfigError(
                f"discovery poller needs interval_s > 0 and timeout_s > 0, got"
                f" interval_s={interval_s!r}, timeout_s={timeout_s!r}",
                key="discovery",
            )
        self._provider = provider
        self._env = env
        self._on_seeds = on_seeds
        self._interval_s = interval_s
        self._backoff = backoff or Backoff(base_s=0.5, max_s=30.0)
        self._timeout_s = timeout_s
        self._register = register
        self._exclude = frozenset(exclude)
        self._tasks = TaskSet("discovery")
        self._registered = False
        self._delivered: tuple[str, ...] | None = None
        self._polls = self._failures = self._timeouts = self._streak = self._deliveries = 0
        self._last_error = ""
        self._closed = False

    async def start(self) -> None:
        """Start polling in the background; the first poll begins at once. Never blocks."""
        if self._closed:
            raise RuntimeError("DiscoveryPoller was closed; make a new one")
        if len(self._tasks) == 0:
            self._tasks.spawn(self._run(), name=f"discovery {self._provider!r}")

    async def _run(self) -> None:
        clock, rng = self._env.clock, self._env.random
        while True:
            if await self.poll_once():
                delay = self._interval_s * (1.0 - 0.1 * rng.random())
            else:
                delay = self._backoff.delay(self._streak - 1, rng)
            await clock.sleep(delay)

    async def poll_once(self) -> bool:
        """Register if still needed, then fetch seeds and deliver a changed list.

        Returns:
            ``True`` if every step worked. Never raises (except on cancellation).
        """
        provider = self._provider
        errors: list[str] = []
        if (
            self._register is not None
            and not self._registered
            and isinstance(provider, RegisteringProvider)
        ):
            name, address = self._register
            done = await self._attempt(
                "register", lambda: provider.register(name, address), errors
            )
            self._registered = not isinstance(done, _Failed)
        found = await self._attempt("seeds", provider.seeds, errors)
        if not isinstance(found, _Failed | list):
            errors.append(f"seeds: expected a list, got {found!r:.100}")
        self._polls += 1
        if errors:
            self._failed("; ".join(errors))
        else:
            self._recovered()
        if isinstance(found, list):
            await self._deliver(found)
        return not errors

    async def _attempt(
        self, step: str, call: Callable[[], Awaitable[_T]], errors: list[str]
    ) -> _T | _Failed:
        """Run one provider call under the deadline; on failure note why, return ``_FAILED``."""
        try:
            async with fail_after(self._env.clock, self._timeout_s):
                return await call()
        except TimeoutError:
            self._timeouts += 1
            errors.append(f"{step}: no answer within {self._timeout_s}s")
        except DiscoveryError as exc:  # already says which provider and where
            errors.append(f"{step}: {exc}")
        except Exception as exc:  # a provider bug must not reach the node either
            errors.append(f"{step}: {type(exc).__name__}: {exc}")
        return _FAILED

    def _failed(self, error: str) -> None:
        self._failures += 1
        self._streak += 1
        self._last_error = error
        if self._streak == 1:
            _log.warning("discovery via %r failed (%s); retrying with backoff, silent until"
                         " it works again", self._provider, error)
        else:
            _log.debug("discovery via %r failed again (%d in a row): %s",
                       self._provider, self._streak, error)

    def _recovered(self) -> None:
        if self._streak:
            _log.info("discovery via %r works again after %d failures", self._provider,
                      self._streak)
        self._streak = 0
        self._last_error = ""

    async def _deliver(self, found: list[str]) -> None:
        seeds = tuple(
            unique_sorted(s for s in found if isinstance(s, str) and s not in self._exclude)
        )
        if seeds == self._delivered:
            return
        try:
            async with fail_after(self._env.clock, self._timeout_s):
                result = self._on_seeds(list(seeds))
                if inspect.isawaitable(result):
                    await result
        except Exception:  # TimeoutError included: the node's side must not stall us
            _log.exception("discovery: the on_seeds callback failed; will offer the list again")
            return
        self._delivered = seeds
        self._deliveries += 1

    async def aclose(self) -> None:
        """Stop polling, deregister (bounded by ``timeout_s``) and close the provider."""
        if self._closed:
            return
        self._closed = True
        await self._tasks.aclose()
        provider = self._provider
        if self._registered and isinstance(provider, RegisteringProvider):
            try:
                async with fail_after(self._env.clock, self._timeout_s):
                    await provider.deregister()
            except Exception as exc:
                _log.info("discovery: deregistering from %r failed (%s); it expires by TTL",
                          provider, exc)
            self._registered = False
        try:
            async with fail_after(self._env.clock, self._timeout_s):
                await provider.aclose()
        except Exception as exc:
            _log.info("discovery: closing %r failed: %s", provider, exc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> DiscoveryStatistics:
        return DiscoveryStatistics(
            polls=self._polls,
            failures=self._failures,
            timeouts=self._timeouts,
            failure_streak=self._streak,
            deliveries=self._deliveries,
            seeds=self._delivered or (),
            registered=self._registered,
            last_error=self._last_error,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if len(self._tasks) else "idle")
        health = f"{self._streak} failing" if self._streak else "ok"
        return (f"<DiscoveryPoller {self._provider!r} {state} [{len(self._delivered or ())}"
                f" seeds, {self._polls} polls, {health}]>")
