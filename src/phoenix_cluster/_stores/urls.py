"""Store URLs: ``name=url`` settings turned into :class:`~.base.StateStore` objects.

``sqlite:///abs/path.db`` (or ``sqlite://relative/path.db``) opens a
:class:`~.sqlite.SqliteStore`; ``postgresql://...`` (or ``postgres://``) a
:class:`~.postgres.PostgresStore`. A ready object that has the protocol's methods may be
given instead of a URL (``Node(stores={"main": MyStore()})``).
"""

from __future__ import annotations

from collections.abc import Mapping

from .._foundation.extras import MissingExtra, require_extra
from .._foundation.settings import redact_url
from ..errors import ConfigError
from .base import StateStore
from .postgres import PostgresStore
from .sqlite import SqliteStore

__all__ = ["check_store_url", "open_store", "parse_store_option", "redacted"]

_SCHEMES = ("sqlite://", "postgresql://", "postgres://")


def check_store_url(name: str, url: str) -> None:
    """Raise ``ConfigError`` naming the store unless ``url`` is one Phoenix can open
    (and the extra it needs is installed)."""
    if not isinstance(name, str) or not name or "=" in name:
        raise ConfigError(f"bad setting stores: a store name must be a non-empty string "
                          f"without '=', got {name!r}", key="stores")
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        raise ConfigError(f"bad setting stores: store {name!r} has URL {shown!r}; expected "
                          "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
                          key="stores")
    if url.startswith("sqlite://") and not url.removeprefix("sqlite://"):
        raise ConfigError(f"bad setting stores: store {name!r}: sqlite:// needs a file path, "
                          "e.g. sqlite:///var/lib/phoenix/state.db", key="stores")
    if url.startswith(("postgresql://", "postgres://")):
        try:
            require_extra("postgres", f"state store {name!r} ({redact_url(url)})")
        except MissingExtra as exc:
            raise ConfigError(f"bad setting stores: {exc}", key="stores") from None


def open_store(name: str, url: str) -> StateStore:
    """The store ``url`` names (not connected yet: stores connect on first use).

    Raises:
        ConfigError: an unknown scheme, an empty path, or a missing extra.
    """
    check_store_url(name, url)
    if url.startswith("sqlite://"):
        return SqliteStore(url.removeprefix("sqlite://"))
    return PostgresStore(url)


def parse_store_option(option: str) -> tuple[str, str]:
    """``NAME=URL`` (the ``--store`` flag, ``PHX_STORES`` items) as ``(name, url)``.

    Raises:
        ConfigError: no ``=``, or a bad name or URL.
    """
    name, sep, url = option.partition("=")
    if not sep:
        raise ConfigError(f"bad setting stores: expected NAME=URL, got "
                          f"{redact_url(option)!r}", key="stores")
    name = name.strip()
    url = url.strip()
    check_store_url(name, url)
    return name, url


def redacted(stores: Mapping[str, str]) -> dict[str, str]:
    """``stores`` with passwords hidden (for reprs and logs)."""
    return {name: redact_url(url) for name, url in stores.items()}
