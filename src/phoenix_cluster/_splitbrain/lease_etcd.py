"""The split-brain lease held in etcd: one key whose value is the owner, bound to an etcd lease.

A hold is the key ``KEY = owner`` attached to an etcd lease of ``ttl_s``. etcd deletes the
key when its lease expires, so a side that stops renewing loses the hold one TTL later,
measured on etcd's clock, never on ours. Acquiring:

1. read the key; held by ``owner``: keep its etcd lease alive (this renews the hold; all
   nodes of one side acquire with the same owner id, so the lease is re-entrant per
   owner) and answer ``True``; held by another owner: ``False``;
2. free: grant an etcd lease and write the key in a transaction that succeeds only if
   the key still does not exist (``create_revision == 0``). Two sides racing for a free
   key cannot both win: etcd serialises the transactions. The loser revokes the lease it
   granted and answers by who won (its own side may have won through a peer).

Speaks etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/*``), which
every etcd 3.4+ serves on its client port, through the same small client as the etcd
discovery provider (``_membership/discovery_http.py``): one dependency (aiohttp, the
``etcd`` extra) instead of a gRPC stack.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._membership.discovery_http import JsonHttp, ssl_context
from phoenix_cluster.errors import ConfigError

__all__ = ["EtcdLease"]

_log = logging.getLogger("phoenix_cluster.splitbrain")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _text(b64: object) -> str:
    return base64.b64decode(str(b64 or ""), validate=True).decode("utf-8", "replace")


class EtcdLease:
    """The ``lease`` strategy's referee in etcd (see the module docstring).

    Args:
        endpoint: etcd client URL, ``http://127.0.0.1:2379`` (``https`` verifies the server
            against ``ca_path`` or the system's trust store).
        key: the key that holds the owner, one per cluster, e.g. ``/phoenix/split-brain``.
        env: the node's clock, for request deadlines.
        timeout_s: deadline of each HTTP request.
        ca_path: CA bundle for an ``https`` endpoint.

    Failures to reach etcd raise :class:`~phoenix_cluster._membership.discovery.DiscoveryError`;
    the resolver counts a raising acquire as a lost lease (the side downs itself).
    """

    def __init__(
        self,
        endpoint: str,
        key: str,
        *,
        env: Env | None = None,
        timeout_s: float = 5.0,
        ca_path: str | None = None,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"bad setting split_brain_lease: etcd endpoint must be http(s)://HOST:PORT,"
                f" got {endpoint!r}",
                key="split_brain_lease",
            )
        if not key.strip("/"):
            raise ConfigError("bad setting split_brain_lease: the etcd key must not be empty",
                              key="split_brain_lease")
        self.key = key
        self._http = JsonHttp(
            "etcd",
            endpoint,
            (env or Env()).clock,
            timeout_s=timeout_s,
            ssl=ssl_context(ca_path) if ca_path else None,
        )

    async def holder(self) -> tuple[str, str] | None:
        """``(owner, etcd lease id)`` of the current hold, or ``None`` when free."""
        answer = _dict(await self._http.request("POST", "/v3/kv/range",
                                                body={"key": _b64(self.key)}), "range")
        return _hold(answer.get("kvs"))

    async def acquire(self, owner: str, ttl_s: float) -> bool:
        """Take the hold for ``owner`` (or renew it); ``False`` while another owner holds.

        ``ttl_s`` is rounded up to whole seconds (etcd's unit); a renewal keeps the TTL the
        hold was created with.
        """
        if not owner:
            raise ValueError("the lease owner must not be empty")
        current = await self.holder()
        if current is not None:
            return await self._renew_if_ours(owner, current)
        grant = _dict(await self._http.request(
            "POST", "/v3/lease/grant", body={"TTL": max(1, math.ceil(ttl_s))}), "lease grant")
        lease = grant.get("ID")
        if not lease:
            raise DiscoveryError(f"etcd: lease grant answered without an ID: {grant!r}")
        key = _b64(self.key)
        txn = _dict(await self._http.request("POST", "/v3/kv/txn", body={
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(owner), "lease": lease}}],
            "failure": [{"request_range": {"key": key}}],
        }), "txn")
        if txn.get("succeeded"):
            return True
        await self._revoke(str(lease))  # someone else created the key first
        responses = txn.get("responses") or [{}]
        winner = _hold((responses[0].get("response_range") or {}).get("kvs"))
        return winner is not None and await self._renew_if_ours(owner, winner)

    async def _renew_if_ours(self, owner: str, hold: tuple[str, str]) -> bool:
        held_by, lease = hold
        if held_by != owner:
            return False
        answer = _dict(await self._http.request(
            "POST", "/v3/lease/keepalive", body={"ID": lease}), "lease keepalive")
        result = answer.get("result", answer)
        # TTL <= 0: the hold expired between our read and the keepalive; the key is gone.
        return isinstance(result, dict) and int(result.get("TTL", 0) or 0) > 0

    async def release(self, owner: str) -> None:
        """Delete the hold if ``owner`` has it (compare-and-delete), revoking its lease."""
        current = await self.holder()
        if current is None or current[0] != owner:
            return
        key = _b64(self.key)
        txn = _dict(await self._http.request("POST", "/v3/kv/txn", body={
            "compare": [{"key": key, "target": "VALUE", "result": "EQUAL",
                         "value": _b64(owner)}],
            "success": [{"request_delete_range": {"key": key}}],
        }), "txn")
        if txn.get("succeeded"):
            await self._revoke(current[1])

    async def _revoke(self, lease: str) -> None:
        # Best effort: an orphaned etcd lease holds no key and expires on its own.
        with contextlib.suppress(DiscoveryError):
            await self._http.request("POST", "/v3/lease/revoke", body={"ID": lease})

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"<EtcdLease {self._http.base_url} key {self.key}>"


def _hold(kvs: object) -> tuple[str, str] | None:
    if not isinstance(kvs, list) or not kvs or not isinstance(kvs[0], dict):
        return None
    kv = kvs[0]
    try:
        owner = _text(kv.get("value"))
    except ValueError:
        owner = ""
    return owner, str(kv.get("lease", "0"))


def _dict(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise DiscoveryError(f"etcd: {what} answered {answer!r:.200}, expected a JSON object")
    return answer
