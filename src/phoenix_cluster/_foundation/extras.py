"""The optional parts of Phoenix (``pip install 'phoenix-cluster[EXTRA]'``) and their checks.

The core library needs only msgspec (and uvloop where it exists); the CLI, the HTTP
endpoint, the benchmarks, the demo, the extra transports, discovery providers and
OpenTelemetry export sit behind extras of ``pyproject.toml``. Code that needs one calls
:func:`require_extra` before it starts, so a missing package is one line naming the
extra to install, never a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRA_MODULES", "MissingExtra", "extra_of_module", "missing_module",
           "require_extra"]

# Modules each extra provides (import names, not distribution names). Kept in step with
# [project.optional-dependencies] by tests/test_packaging.py.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "cli": ("click", "rich"),
    "web": ("aiohttp", "prometheus_client"),
    "bench": ("click", "rich"),
    "demo": ("click", "rich", "aiohttp", "prometheus_client"),
    "fast": ("uvloop",),
    "http2": ("h2",),
    "quic": ("aioquic",),
    "dns": ("dns",),
    "etcd": ("aiohttp",),
    "k8s": ("aiohttp",),
    "consul": ("aiohttp",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "postgres": ("asyncpg",),
}


class MissingExtra(ImportError):
    """A feature was asked for whose extra is not installed.

    Attributes:
        extra: the extra that provides it (``pip install 'phoenix-cluster[<extra>]'``).
        module: the first of its modules that cannot be imported.
        feature: what needed it, e.g. ``phx demo``.
    """

    def __init__(self, extra: str, module: str, feature: str) -> None:
        self.extra = extra
        self.module = module
        self.feature = feature
        super().__init__(f"{feature} needs the '{extra}' extra ({module} is not installed): "
                         f"pip install 'phoenix-cluster[{extra}]'", name=module)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or blocked
        return False


def missing_module(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be imported (``None``: all present)."""
    return next((m for m in EXTRA_MODULES[extra] if not _importable(m)), None)


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` if a module of ``extra`` cannot be imported."""
    module = missing_module(extra)
    if module is not None:
        raise MissingExtra(extra, module, feature)


def extra_of_module(module: str | None) -> str | None:
    """The narrowest extra that provides ``module`` (a top-level import name), if any."""
    if not module:
        return None
    top = module.split(".")[0]
    for extra, modules in EXTRA_MODULES.items():  # cli before demo, web before etcd
        if any(m.split(".")[0] == top for m in modules):
            return extra
    return None
