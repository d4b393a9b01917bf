"""The ``split_brain_lease`` setting: one string naming the lease service of the ``lease``
strategy, parsed like ``discovery`` (``_membership/discovery_spec.py``).

Provider modules are imported only for the spec that needs them, so a missing aiohttp is
a :class:`~phoenix_cluster.errors.ConfigError` naming the extra, not an import error.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from phoenix_cluster._foundation.env import Env
from phoenix_cluster.errors import ConfigError

from .lease import LeaseProvider

__all__ = ["LEASE_SPEC_FORMS", "ClosableLease", "checked_lease_spec", "lease_from_spec"]

LEASE_SPEC_FORMS = (
    "etcd:http://HOST:PORT/KEY",
    "k8s:NAMESPACE/NAME[?api=URL&token=PATH&ca=PATH]",
)


class ClosableLease(LeaseProvider, Protocol):
    """A lease provider the node closes when it stops."""

    async def aclose(self) -> None: ...


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"bad setting split_brain_lease: {why} (got {spec!r}); expected one of: "
        f"{'; '.join(LEASE_SPEC_FORMS)}",
        key="split_brain_lease",
    )


def _load(module: str, extra: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(f"phoenix_cluster._splitbrain.{module}")
    except ImportError as exc:
        raise ConfigError(
            f"bad setting split_brain_lease: {spec!r} needs aiohttp (import "
            f"{exc.name or '?'} failed): pip install 'phoenix-cluster[{extra}]'",
            key="split_brain_lease",
        ) from exc


def checked_lease_spec(strategy: str, spec: str | None) -> str | None:
    """The lease spec the node must use: ``spec`` under the ``lease`` strategy, else ``None``.

    Raises:
        ConfigError: the ``lease`` strategy without a spec, or a malformed spec (built once
            to check it, with its extra, so ``phx node`` fails at start with one line).
    """
    if strategy != "lease":
        return None
    if not spec:
        raise ConfigError(
            "bad setting split_brain_lease: split_brain = lease needs the lease service, "
            f"one of: {'; '.join(LEASE_SPEC_FORMS)}",
            key="split_brain_lease",
        )
    lease_from_spec(spec)  # opens nothing: sessions start with the first request
    return spec


def lease_from_spec(
    spec: str, *, env: Env | None = None, environ: Mapping[str, str] | None = None
) -> ClosableLease:
    """Build the lease provider a ``split_brain_lease`` string names.

    Forms::

        etcd:http://127.0.0.1:2379/phoenix/split-brain
        k8s:phoenix/phoenix-split-brain     (in a pod: API from KUBERNETES_SERVICE_*)
        k8s:default/phx?api=http://127.0.0.1:8001&token=   (through kubectl proxy)

    Raises:
        ConfigError: malformed spec, unknown provider, or its extra is not installed;
            ``key="split_brain_lease"``.
    """
    environ = os.environ if environ is None else environ
    kind, sep, rest = spec.strip().partition(":")
    if not sep or not rest:
        raise _bad(spec, "missing PROVIDER:ARGUMENTS")
    kind = kind.lower()
    if kind == "etcd":
        url = urlsplit(rest)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise _bad(spec, "etcd needs an http:// or https:// endpoint")
        if not url.path.strip("/") or url.query:
            raise _bad(spec, "etcd needs the lease key after the endpoint, e.g. /phoenix/lease")
        etcd: ClosableLease = _load("lease_etcd", "etcd", spec).EtcdLease(
            f"{url.scheme}://{url.netloc}", url.path, env=env)
        return etcd
    if kind in ("k8s", "kubernetes"):
        body, _, query = rest.partition("?")
        parsed = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(parsed) - {"api", "token", "ca"})
        if unknown:
            raise _bad(spec, f"unknown option {unknown[0]!r} (known: api, ca, token)")
        opts = {k: v[-1] for k, v in parsed.items()}
        namespace, sep, name = body.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise _bad(spec, "k8s needs NAMESPACE/NAME")
        api = opts.get("api")
        if not api:
            host = environ.get("KUBERNETES_SERVICE_HOST")
            if not host:
                raise _bad(spec, "KUBERNETES_SERVICE_HOST is not set (not in a pod?); "
                                 "pass ?api=URL")
            port = environ.get("KUBERNETES_SERVICE_PORT", "443")
            api = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        paths = {f"{k}_path": opts[k] or None for k in ("token", "ca") if k in opts}
        k8s: ClosableLease = _load("lease_k8s", "k8s", spec).KubernetesLease(
            api, namespace, name, env=env, **paths)
        return k8s
    raise _bad(spec, f"unknown provider {kind!r}")
