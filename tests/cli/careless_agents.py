"""Agents whose code logs secrets carelessly: the log must show ``***`` instead.

``phx node --import careless_agents`` in the hygiene test; the node's environment holds
the cluster cookie (``PHX_COOKIE``) and a Consul ACL token (``CONSUL_HTTP_TOKEN``).
"""

from __future__ import annotations

import logging
import os

import phoenix_cluster as phx

_log = logging.getLogger("careless_agents")


def _leak() -> None:
    cookie = os.environ.get("PHX_COOKIE", "")
    token = os.environ.get("CONSUL_HTTP_TOKEN", "")
    _log.warning("careless: cookie %s, consul token %s", cookie, token)
    _log.warning("careless malformed %d %d", cookie)  # a broken format string


_leak()


class CarelessCounter(phx.Agent, kind="cli_tests.careless_counter"):
    def __init__(self) -> None:
        self.count = 0

    async def increment(self, by: int = 1) -> int:
        self.count += by
        if self.count == 1:
            _leak()
        return self.count
