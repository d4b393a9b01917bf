"""Consul discovery: the instances of one service, and this node's own registration.

Reads ``GET /v1/health/service/{service}?passing=true`` (instances whose checks all pass;
the default) or ``GET /v1/catalog/service/{service}`` (every registered instance). A node
registers with the *local agent* (``PUT /v1/agent/service/register``) with a TTL check
that it passes every ``ttl_s / 3`` (``PUT /v1/agent/check/pass/service:{id}``): a node that
dies goes critical after ``ttl_s``, drops out of the healthy list at once and is removed
after ``DeregisterCriticalServiceAfter``. A pass that finds the check unknown (the agent
restarted and forgot us) registers again. A graceful stop deregisters. The ACL token, if
any, goes in ``X-Consul-Token``.
"""

from __future__ import annotations

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
    join_host_port,
    renew_forever,
    unique_sorted,
)
from .discovery_http import HttpStatusError, JsonHttp, ssl_context

__all__ = ["ConsulSeeds"]

_log = logging.getLogger("phoenix_cluster.membership")


class ConsulSeeds(ProviderBase):
    """Seeds are ``address:port`` of the service's instances.

    Args:
        url: the Consul HTTP API, normally the local agent ``http://127.0.0.1:8500``.
        service: the service name all nodes of one cluster share, e.g. ``phoenix``.
        passing_only: list only instances whose health checks pass (health endpoint);
            ``False`` lists every registered instance (catalog endpoint).
        ttl_s: the TTL check's period: how long a dead node still looks healthy.
        token: ACL token (``CONSUL_HTTP_TOKEN``); never logged.
        env: the node's clock (check passes, request deadlines) and randomness.
        timeout_s: deadline for each HTTP request.
        ca_path: CA bundle for an ``https`` URL.
    """

    def __init__(
        self,
        url: str,
        service: str,
        *,
        passing_only: bool = True,
        ttl_s: float = 15.0,
        token: str | None = None,
        env: Env | None = None,
        timeout_s: float = 5.0,
        ca_path: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"bad setting discovery: Consul URL must be http(s)://…, got {url!r}",
                              key="discovery")
        if not service or "/" in service:
            raise ConfigError(f"bad setting discovery: bad Consul service name {service!r}",
                              key="discovery")
        if not ttl_s >= 1:
            raise ConfigError(f"consul ttl_s must be >= 1, got {ttl_s!r}", key="discovery")
        self._env = env or Env()
        self._service = service
        self._passing_only = passing_only
        self._ttl = max(1, math.ceil(ttl_s))
        self._headers = {"X-Consul-Token": token} if token else {}
        self._http = JsonHttp("consul", url, self._env.clock, timeout_s=timeout_s,
                              ssl=ssl_context(ca_path) if ca_path else None)
        self._tasks = TaskSet("consul-discovery")
        self._me: tuple[str, str] | None = None
        self._passes = 0
        self._reregistrations = 0

    @property
    def service_id(self) -> str | None:
        """This node's service instance id, or ``None`` when not registered."""
        return f"{self._service}-{self._me[0]}" if self._me else None

    @property
    def passes(self) -> int:
        """TTL check passes sent so far."""
        return self._passes

    @property
    def reregistrations(self) -> int:
        """Times the agent had forgotten us and this node registered again."""
        return self._reregistrations

    async def seeds(self) -> list[str]:
        if self._passing_only:
            path = f"/v1/health/service/{self._service}"
            entries = await self._get(path, {"passing": "true"})
            found = [_health_address(e) for e in entries]
        else:
            path = f"/v1/catalog/service/{self._service}"
            entries = await self._get(path, None)
            found = [_catalog_address(e) for e in entries]
        return unique_sorted(a for a in found if a)

    async def _get(self, path: str, params: dict[str, str] | None) -> list[Any]:
        answer = await self._http.request("GET", path, params=params, headers=self._headers)
        if not isinstance(answer, list):
            raise DiscoveryError(f"consul: GET {path} answered {answer!r:.200}, expected a list")
        return answer

    async def register(self, name: str, address: str) -> None:
        """Register this node's instance with a passing TTL check and keep passing it.

        Raises:
            DiscoveryError: the agent could not be reached or refused; call again to retry.
        """
        if not name or "/" in name:
            raise ConfigError(f"consul: node name must be non-empty without '/', got {name!r}",
                              key="name")
        self._me = (name, checked_address(address))
        await self._register()
        if len(self._tasks) == 0:
            self._tasks.spawn(renew_forever("consul", self._env, self._ttl / 3, self._pass),
                              name=f"consul-ttl {name}")

    async def _register(self) -> None:
        assert self._me is not None
        name, address = self._me
        host, _, port = address.rpartition(":")
        service_id = f"{self._service}-{name}"
        body = {
            "ID": service_id,
            "Name": self._service,
            "Address": host.removeprefix("[").removesuffix("]"),
            "Port": int(port),
            "Meta": {"phoenix_node": name},
            "Check": {
                "CheckID": f"service:{service_id}",
                "Name": "phoenix node alive",
                "TTL": f"{self._ttl}s",
                "Status": "passing",
                # Consul's reaper runs about every 30 s; a minute keeps flapping nodes listed.
                "DeregisterCriticalServiceAfter": f"{max(60, 4 * self._ttl)}s",
            },
        }
        await self._http.request("PUT", "/v1/agent/service/register", body=body,
                                 headers=self._headers)

    async def _pass(self) -> None:
        if self._me is None:
            return
        check = f"service:{self._service}-{self._me[0]}"
        try:
            await self._http.request("PUT", f"/v1/agent/check/pass/{check}",
                                     headers=self._headers)
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                raise
            # The agent no longer knows the check (it restarted, or reaped us): start over.
            _log.info("consul: TTL check %s unknown to the agent (%s); registering again",
                      check, exc)
            await self._register()
            self._reregistrations += 1
        else:
            self._passes += 1

    async def deregister(self) -> None:
        """Stop passing the check and remove this node's instance from the agent.

        Raises:
            DiscoveryError: the agent did not answer; Consul then marks the instance
                critical after ``ttl_s`` and removes it later.
        """
        await self._tasks.aclose()
        service_id, self._me = self.service_id, None
        if service_id is not None:
            await self._http.request("PUT", f"/v1/agent/service/deregister/{service_id}",
                                     headers=self._headers)

    async def aclose(self) -> None:
        try:
            if self._me is not None:
                await self.deregister()
        except DiscoveryError as exc:
            _log.info("consul: could not deregister (%s); the TTL check will expire", exc)
        finally:
            await self._tasks.aclose()
            await self._http.aclose()

    def __repr__(self) -> str:
        me = f"registered as {self.service_id}" if self._me else "not registered"
        mode = "passing" if self._passing_only else "catalog"
        return (f"<ConsulSeeds {self._http.base_url} service {self._service} ({mode})"
                f" [{me}, {self._passes} passes, {self._reregistrations} re-registrations]>")


def _health_address(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    service, node = entry.get("Service") or {}, entry.get("Node") or {}
    return _address(service.get("Address") or node.get("Address"), service.get("Port"))


def _catalog_address(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    return _address(entry.get("ServiceAddress") or entry.get("Address"),
                    entry.get("ServicePort"))


def _address(host: object, port: object) -> str | None:
    if not isinstance(host, str) or not host or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return join_host_port(host, port)
