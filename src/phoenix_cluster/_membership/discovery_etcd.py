"""etcd discovery: each node keeps ``PREFIX/NAME = host:port`` alive under a lease.

Speaks etcd's v3 JSON gateway (``/v3/lease/grant``, ``/v3/kv/put``, ``/v3/kv/range``,
``/v3/lease/keepalive``, ``/v3/lease/revoke``; keys and values base64), which every etcd
3.4+ serves on its client port, so no gRPC stack is needed. A node's key is bound to a
lease of ``ttl_s``: a node that dies stops renewing it and etcd deletes the key one TTL
later; a graceful stop revokes it at once. When a keepalive finds the lease gone (etcd
restarted, or we were cut off longer than the TTL) the node grants a new lease and writes
its key again. Same scheme as libcluster's and Orleans' etcd-backed membership tables.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._transport.tasks import TaskSet
from phoenix_cluster.errors import ConfigError

from .discovery import (
    DiscoveryError,
    ProviderBase,
    checked_address,
    renew_forever,
    unique_sorted,
)
from .discovery_http import JsonHttp, ssl_context

__all__ = ["EtcdSeeds"]

_log = logging.getLogger("phoenix_cluster.membership")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range_end)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # all keys


class EtcdSeeds(ProviderBase):
    """Seeds are the values under ``prefix``; :meth:`register` adds this node's own key.

    Args:
        endpoint: etcd client URL, ``http://127.0.0.1:2379`` (``https`` verifies the
            server against ``ca_path`` or the system's trust store).
        prefix: key prefix shared by the cluster, e.g. ``/phoenix/``; one per cluster.
        ttl_s: lease TTL: how long a crashed node stays listed. Shorter finds dead seeds
            sooner but costs a keepalive every ``ttl_s / 3``. etcd rounds up to seconds.
        env: the node's clock (keepalive timer, request deadlines) and randomness.
        timeout_s: deadline for each HTTP request.
        ca_path: CA bundle for an ``https`` endpoint.
    """

    def __init__(
        self,
        endpoint: str,
        prefix: str = "/phoenix/",
        ttl_s: float = 10.0,
        *,
        env: Env | None = None,
        timeout_s: float = 5.0,
        ca_path: str | None = None,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"bad setting discovery: etcd endpoint must be http(s)://HOST:PORT,"
                f" got {endpoint!r}",
                key="discovery",
            )
        if not ttl_s >= 1:
            raise ConfigError(f"etcd ttl_s must be >= 1, got {ttl_s!r}", key="discovery")
        self._env = env or Env()
        self._prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._ttl = max(1, math.ceil(ttl_s))
        self._http = JsonHttp(
            "etcd",
            endpoint,
            self._env.clock,
            timeout_s=timeout_s,
            ssl=ssl_context(ca_path) if ca_path else None,
        )
        self._tasks = TaskSet("etcd-discovery")
        self._me: tuple[str, str] | None = None
        self._lease: str | None = None
        self._renewals = 0
        self._regrants = 0

    @property
    def lease_id(self) -> str | None:
        """The lease holding this node's key, or ``None`` when not registered."""
        return self._lease

    @property
    def renewals(self) -> int:
        """Successful lease keepalives so far."""
        return self._renewals

    @property
    def regrants(self) -> int:
        """Times the lease was found gone and this node registered again."""
        return self._regrants

    async def seeds(self) -> list[str]:
        prefix = self._prefix.encode()
        answer = await self._http.request(
            "POST",
            "/v3/kv/range",
            body={"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))},
        )
        found: list[str] = []
        for kv in _dict(answer, "range").get("kvs", []):
            try:
                value = base64.b64decode(kv.get("value", ""), validate=True).decode()
                found.append(checked_address(value))
            except (ValueError, ConfigError, AttributeError):
                _log.debug("etcd: ignoring a value under %s that is not HOST:PORT: %r",
                           self._prefix, kv)
        return unique_sorted(found)

    async def register(self, name: str, address: str) -> None:
        """Write ``PREFIX/name = address`` under a fresh lease and keep the lease alive.

        Raises:
            DiscoveryError: etcd could not be reached or refused; call again to retry.
        """
        if not name or "/" in name:
            raise ConfigError(f"etcd: node name must be non-empty without '/', got {name!r}",
                              key="name")
        self._me = (name, checked_address(address))
        await self._grant_and_put()
        if len(self._tasks) == 0:
            self._tasks.spawn(
                renew_forever("etcd", self._env, self._ttl / 3, self._renew),
                name=f"etcd-keepalive {name}",
            )

    async def deregister(self) -> None:
        """Stop renewing and revoke the lease, which deletes this node's key at once.

        Raises:
            DiscoveryError: etcd did not answer; the key then expires after ``ttl_s``.
        """
        await self._tasks.aclose()
        self._me = None
        lease, self._lease = self._lease, None
        if lease is not None:
            await self._http.request("POST", "/v3/lease/revoke", body={"ID": lease})

    async def aclose(self) -> None:
        try:
            if self._me is not None or self._lease is not None:
                await self.deregister()
        except DiscoveryError as exc:
            _log.info("etcd: could not revoke our lease (%s); the key expires after %ds",
                      exc, self._ttl)
        finally:
            await self._tasks.aclose()
            await self._http.aclose()

    async def _grant_and_put(self) -> None:
        assert self._me is not None
        name, address = self._me
        grant = _dict(await self._http.request("POST", "/v3/lease/grant",
                                               body={"TTL": self._ttl}), "lease grant")
        lease = grant.get("ID")
        if not lease:
            raise DiscoveryError(f"etcd: lease grant answered without an ID: {grant!r}")
        await self._http.request(
            "POST",
            "/v3/kv/put",
            body={
                "key": _b64((self._prefix + name).encode()),
                "value": _b64(address.encode()),
                "lease": lease,
            },
        )
        old, self._lease = self._lease, str(lease)
        if old is not None and old != self._lease:
            # Best effort: an old lease that still exists would keep a stale key alive.
            with contextlib.suppress(DiscoveryError):
                await self._http.request("POST", "/v3/lease/revoke", body={"ID": old})

    async def _renew(self) -> None:
        if self._lease is None:
            await self._grant_and_put()
            self._regrants += 1
            return
        answer = _dict(
            await self._http.request("POST", "/v3/lease/keepalive", body={"ID": self._lease}),
            "lease keepalive",
        )
        if "error" in answer:
            raise DiscoveryError(f"etcd: lease keepalive failed: {answer['error']!r}")
        result = answer.get("result", answer)
        if int(result.get("TTL", 0) or 0) <= 0:
            # The lease is gone (expired while we were cut off, or etcd lost it).
            _log.info("etcd: lease %s expired; registering again", self._lease)
            self._lease = None
            await self._grant_and_put()
            self._regrants += 1
        else:
            self._renewals += 1

    def __repr__(self) -> str:
        me = f"registered as {self._me[0]}, lease {self._lease}" if self._me else "not registered"
        return (f"<EtcdSeeds {self._http.base_url}{self._prefix} ttl={self._ttl}s [{me},"
                f" {self._renewals} renewals, {self._regrants} re-grants]>")


def _dict(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise DiscoveryError(f"etcd: {what} answered {answer!r}, expected a JSON object")
    return answer
