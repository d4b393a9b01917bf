"""Discovery: where a starting node finds the ``host:port`` of a few peers (its seeds).

Discovery only finds seeds; membership (SWIM) does the rest. So a provider answers one
question, "who might be out there right now?", and may be wrong or slow without harm: the
:class:`~.discovery_poller.DiscoveryPoller` asks it on a timer, bounds every call with a
deadline on the node's clock, backs off when it fails and never lets a failure reach the
node. The Erlang world splits it the same way (libcluster strategies feed ``Node.connect``).

Providers (one module each, loaded only when used, so their extras stay optional):

- :class:`StaticSeeds` (here): a fixed list, the ``--seed`` flags.
- :class:`~.discovery_dns.DnsSeeds`: A / AAAA / SRV records, e.g. a Kubernetes headless
  Service (extra ``[dns]``: dnspython).
- :class:`~.discovery_etcd.EtcdSeeds`: keys under a prefix in etcd, each node's own key
  held by a lease it keeps alive (extra ``[etcd]``: aiohttp, etcd's v3 JSON gateway).
- :class:`~.discovery_k8s.KubernetesSeeds`: Running and Ready pods by label selector from
  the Kubernetes API (extra ``[k8s]``: aiohttp).
- :class:`~.discovery_consul.ConsulSeeds`: a Consul service's healthy instances, with
  registration and a TTL check (extra ``[consul]``: aiohttp).

:func:`~.discovery_spec.discovery_from_spec` turns the CLI's one-string form
(``dns:srv:_phoenix._tcp.x``) into a provider. Must not import anything above the
transport layer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster.errors import ConfigError

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "DiscoveryError",
    "DiscoveryProvider",
    "ProviderBase",
    "RegisteringProvider",
    "StaticSeeds",
    "checked_address",
    "join_host_port",
    "renew_forever",
    "unique_sorted",
]

_log = logging.getLogger("phoenix_cluster.membership")


class DiscoveryError(Exception):
    """A provider could not get an answer (backend down, refused, or answered nonsense).

    The message names the provider, where it asked and what came back. The poller logs
    it and retries with backoff; it never reaches the node.
    """


@runtime_checkable
class DiscoveryProvider(Protocol):
    """Finds the addresses of peers. Implementations must be cheap to call repeatedly.

    ``seeds()`` may raise (any ``Exception``) or hang: the poller bounds and absorbs both.
    ``aclose()`` releases sessions and, for registering providers, deregisters.
    """

    async def seeds(self) -> list[str]:
        """Return ``host:port`` (``[v6]:port``) of peers found now, possibly including us."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RegisteringProvider(DiscoveryProvider, Protocol):
    """A provider where a node also announces itself (etcd, Consul).

    ``register`` is idempotent: calling it again re-announces (after the backend lost us).
    The provider keeps the registration alive (lease keepalive, TTL check) until
    ``deregister()`` or ``aclose()``, so a crashed node drops out after its TTL.
    """

    async def register(self, name: str, address: str) -> None: ...

    async def deregister(self) -> None: ...


class ProviderBase:
    """``async with`` support for every provider; ``aclose()`` does nothing by default."""

    __slots__ = ()

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class StaticSeeds(ProviderBase):
    """A fixed list of seeds (the ``--seed`` flags).

    Args:
        seeds: ``host:port`` strings; validated now so a typo fails at startup.

    Raises:
        phx.ConfigError: an entry is not ``HOST:PORT`` (``key="discovery"``).
    """

    __slots__ = ("_seeds",)

    def __init__(self, seeds: Iterable[str]) -> None:
        self._seeds = unique_sorted(checked_address(s) for s in seeds)

    async def seeds(self) -> list[str]:
        return list(self._seeds)

    def __repr__(self) -> str:
        return f"<StaticSeeds {','.join(self._seeds) or '(none)'}>"


async def renew_forever(
    what: str, env: Env, period_s: float, renew: Callable[[], Awaitable[None]]
) -> None:
    """Call ``renew()`` every ``period_s`` on the node's clock, until cancelled.

    Registering providers keep their lease or TTL check alive with this. A failure is
    retried with jittered backoff (capped at ``period_s``) and logged once per streak of
    failures, plus one line when it works again.
    """
    backoff = Backoff(base_s=min(0.5, period_s / 2), max_s=period_s)
    failures = 0
    while True:
        delay = backoff.delay(failures - 1, env.random) if failures else period_s
        await env.clock.sleep(delay)
        try:
            await renew()
        except DiscoveryError as exc:
            failures += 1
            if failures == 1:
                _log.warning("%s: keeping our registration alive failed (%s); retrying",
                             what, exc)
        else:
            if failures:
                _log.info("%s: registration alive again after %d failures", what, failures)
            failures = 0


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 literal (``[::1]:7100``)."""
    host = host.removeprefix("[").removesuffix("]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unique_sorted(addresses: Iterable[str]) -> list[str]:
    """Drop duplicates and blanks; sorted, so equal sets compare equal as lists."""
    return sorted({a for a in addresses if a})


def checked_address(address: str) -> str:
    """``address`` normalised to ``host:port``; ``ConfigError(key="discovery")`` if not."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(
            f"bad setting discovery: expected HOST:PORT with a port in 1..65535,"
            f" got {address!r}",
            key="discovery",
        )
    return join_host_port(host, int(port))
