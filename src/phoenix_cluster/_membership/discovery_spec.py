"""The ``discovery`` setting: one string that names a provider and its arguments.

``phx node --discovery SPEC`` (``PHX_DISCOVERY``, ``discovery =`` in ``phoenix.toml``)
parses here. Provider modules are imported only for the spec that needs them, so a missing
optional dependency is an error about that spec (naming the extra to install), not an
import error at startup. Must not import anything above the transport layer.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

from phoenix_cluster._foundation.env import Env
from phoenix_cluster.errors import ConfigError

from .discovery import DiscoveryProvider, StaticSeeds, join_host_port

__all__ = ["SPEC_FORMS", "discovery_from_spec"]

SPEC_FORMS = (
    "static:HOST:PORT[,HOST:PORT...]",
    "dns:[a:|aaaa:]NAME:PORT[?nameserver=IP:PORT]",
    "dns:srv:NAME[?nameserver=IP:PORT]",
    "etcd:http://HOST:PORT/PREFIX[?ttl=SECONDS]",
    "k8s:SELECTOR@NAMESPACE:PORT[?api=URL&token=PATH&ca=PATH]",
    "consul:http://HOST:PORT/SERVICE[?passing=false&ttl=SECONDS]",
)


def _bad(spec: str, why: str) -> ConfigError:
    forms = "; ".join(SPEC_FORMS)
    return ConfigError(
        f"bad setting discovery: {why} (got {spec!r}); expected one of: {forms}",
        key="discovery",
    )


@contextlib.contextmanager
def _spec_errors(spec: str) -> Iterator[None]:
    """Turn a provider's own argument errors into one ConfigError that names the forms."""
    try:
        yield
    except _MissingExtra:
        raise
    except ConfigError as exc:
        if exc.key == "discovery" and "expected one of" in exc.message:
            raise
        raise _bad(spec, exc.message.removeprefix("bad setting discovery: ")) from exc
    except ValueError as exc:
        raise _bad(spec, str(exc)) from exc


class _MissingExtra(ConfigError):
    """The spec is fine but its provider's optional dependency is not installed."""


_EXTRA_PACKAGES = {"dns": "dnspython", "etcd": "aiohttp", "k8s": "aiohttp", "consul": "aiohttp"}


def _load(module: str, extra: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(f"phoenix_cluster._membership.{module}")
    except ImportError as exc:
        raise _MissingExtra(
            f"bad setting discovery: {spec!r} needs {_EXTRA_PACKAGES[extra]}"
            f" (import {exc.name or '?'} failed): pip install 'phoenix-cluster[{extra}]'",
            key="discovery",
        ) from exc


def _query(spec: str, query: str, allowed: set[str]) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(parsed) - allowed)
    if unknown:
        raise _bad(spec, f"unknown option {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    return {k: v[-1] for k, v in parsed.items()}


def _float(spec: str, opts: Mapping[str, str], key: str, default: float) -> float:
    if key not in opts:
        return default
    try:
        value = float(opts[key])
    except ValueError:
        raise _bad(spec, f"option {key} must be a number of seconds, got {opts[key]!r}") from None
    if not value > 0:
        raise _bad(spec, f"option {key} must be > 0, got {opts[key]!r}")
    return value


def discovery_from_spec(
    spec: str, *, env: Env | None = None, environ: Mapping[str, str] | None = None
) -> DiscoveryProvider:
    """Build a provider from its one-string form (the ``--discovery`` flag).

    Forms (see :data:`SPEC_FORMS`)::

        static:h1:7100,h2:7100
        dns:phoenix.example.local:7100            (A; also dns:a:… and dns:aaaa:…)
        dns:srv:_phoenix._tcp.phoenix.ns.svc.cluster.local?nameserver=10.96.0.10:53
        etcd:http://127.0.0.1:2379/phoenix?ttl=10
        k8s:app=phoenix@default:7100              (in a pod: API from KUBERNETES_SERVICE_*)
        consul:http://127.0.0.1:8500/phoenix      (healthy instances; ?passing=false: all)

    Args:
        spec: the string.
        env: clock and randomness for providers with keepalive loops (etcd, Consul).
        environ: environment for ``KUBERNETES_SERVICE_HOST``/``_PORT`` and
            ``CONSUL_HTTP_TOKEN`` (default ``os.environ``).

    Raises:
        phx.ConfigError: the spec is malformed or names an unknown provider (the message
            lists the forms), or its provider needs an extra that is not installed (the
            message gives the ``pip install`` line); ``key="discovery"`` either way.
    """
    environ = os.environ if environ is None else environ
    kind, sep, rest = spec.strip().partition(":")
    if not sep or not rest:
        raise _bad(spec, "missing PROVIDER:ARGUMENTS")
    kind = kind.lower()
    with _spec_errors(spec):
        if kind == "static":
            return StaticSeeds(rest.split(","))
        if kind == "dns":
            return _dns_from_spec(spec, rest)
        if kind == "etcd":
            return _etcd_from_spec(spec, rest, env)
        if kind in ("k8s", "kubernetes"):
            return _k8s_from_spec(spec, rest, env, environ)
        if kind == "consul":
            return _consul_from_spec(spec, rest, env, environ)
    raise _bad(spec, f"unknown provider {kind!r}")


def _dns_from_spec(spec: str, rest: str) -> DiscoveryProvider:
    target, _, query = rest.partition("?")
    opts = _query(spec, query, {"nameserver", "timeout"})
    record = "A"
    head, sep, tail = target.partition(":")
    if sep and head.lower() in ("a", "aaaa", "srv"):
        record, target = head.upper(), tail
    port: int | None = None
    if record != "SRV":
        name, sep, port_text = target.rpartition(":")
        if not sep or not port_text.isdigit():
            raise _bad(spec, f"dns:{record.lower()} needs NAME:PORT")
        target, port = name, int(port_text)
    if not target:
        raise _bad(spec, "missing the DNS name")
    mod = _load("discovery_dns", "dns", spec)
    provider: DiscoveryProvider = mod.DnsSeeds(
        target,
        port,
        kind=record,
        nameserver=opts.get("nameserver") or None,
        timeout_s=_float(spec, opts, "timeout", 5.0),
    )
    return provider


def _etcd_from_spec(spec: str, rest: str, env: Env | None) -> DiscoveryProvider:
    url = urlsplit(rest)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise _bad(spec, "etcd needs an http:// or https:// endpoint")
    prefix = url.path.strip("/")
    if not prefix:
        raise _bad(spec, "etcd needs a key prefix after the endpoint, e.g. /phoenix")
    opts = _query(spec, url.query, {"ttl"})
    mod = _load("discovery_etcd", "etcd", spec)
    provider: DiscoveryProvider = mod.EtcdSeeds(
        f"{url.scheme}://{url.netloc}",
        f"/{prefix}/",
        ttl_s=_float(spec, opts, "ttl", 10.0),
        env=env,
    )
    return provider


def _k8s_from_spec(
    spec: str, rest: str, env: Env | None, environ: Mapping[str, str]
) -> DiscoveryProvider:
    body, _, query = rest.partition("?")
    opts = _query(spec, query, {"api", "token", "ca"})
    selector, sep, where = body.rpartition("@")
    namespace, sep2, port_text = where.partition(":")
    if not sep or not sep2 or not selector or not namespace or not port_text.isdigit():
        raise _bad(spec, "k8s needs SELECTOR@NAMESPACE:PORT")
    api = opts.get("api")
    if not api:
        host = environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise _bad(
                spec, "KUBERNETES_SERVICE_HOST is not set (not in a pod?); pass ?api=URL"
            )
        api = "https://" + join_host_port(host, int(environ.get("KUBERNETES_SERVICE_PORT", 443)))
    mod = _load("discovery_k8s", "k8s", spec)
    paths = {k: opts[k] for k in ("token", "ca") if k in opts}
    provider: DiscoveryProvider = mod.KubernetesSeeds(
        api,
        namespace,
        selector,
        int(port_text),
        env=env,
        **({"token_path": paths["token"] or None} if "token" in paths else {}),
        **({"ca_path": paths["ca"] or None} if "ca" in paths else {}),
    )
    return provider


def _consul_from_spec(
    spec: str, rest: str, env: Env | None, environ: Mapping[str, str]
) -> DiscoveryProvider:
    url = urlsplit(rest)
    service = url.path.strip("/")
    if url.scheme not in ("http", "https") or not url.hostname or not service or "/" in service:
        raise _bad(spec, "consul needs http://HOST:PORT/SERVICE")
    opts = _query(spec, url.query, {"passing", "ttl"})
    passing = opts.get("passing", "true").lower()
    if passing not in ("true", "false", "1", "0"):
        raise _bad(spec, f"option passing must be true or false, got {opts['passing']!r}")
    mod = _load("discovery_consul", "consul", spec)
    provider: DiscoveryProvider = mod.ConsulSeeds(
        f"{url.scheme}://{url.netloc}",
        service,
        passing_only=passing in ("true", "1"),
        ttl_s=_float(spec, opts, "ttl", 15.0),
        token=environ.get("CONSUL_HTTP_TOKEN") or None,
        env=env,
    )
    return provider
