"""Settings resolution for ``phx node``: flags, ``PHX_*``, ``phoenix.toml`` into checked settings.

Every configuration mistake -- a click parse error, a ``ConfigError``, an unreadable cookie
file, an address that cannot be bound, a module that fails to import -- becomes one
:class:`OneLineError`: exactly one line on stderr naming the key and the expected form, and
exit code 2, never a traceback. :func:`checked_settings` runs every check a node would only
fail at start (TLS files, discovery and lease specs, transports, ports, the data directory,
store URLs) before anything is logged, and says which secrets the log must never show.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import IO, Any
from urllib.parse import urlsplit

import click
import msgspec

from .._agents.agent import Agent
from .._foundation.settings import Settings, load_settings
from .._membership.discovery_spec import discovery_from_spec
from .._membership.messages import gossip_address
from .._splitbrain.lease_spec import checked_lease_spec
from .._stores.urls import check_store_url, parse_store_option
from .._telemetry.tracing import check_available as check_tracing
from .._transport.fallback import parse_chain
from .._transport.tcp import parse_address
from .._transport.tls import tls_contexts
from .._web import check_http_address, check_web_extra, is_loopback
from .._web.auth import load_http_token
from ..errors import ConfigError

__all__ = [
    "DEFAULT_LISTEN",
    "EXIT_CONFIG",
    "NodeCommand",
    "OneLineError",
    "checked_settings",
    "config_error_line",
    "import_modules",
    "store_options",
]

DEFAULT_LISTEN = "127.0.0.1:7100"
"""Where ``phx node`` listens unless told otherwise: loopback only."""

EXIT_CONFIG = 2

# What each setting looks like, for error lines (settings.py reports the exact check).
_FORMS = {
    "name": "a string",
    "listen": "HOST:PORT",
    "seeds": "HOST:PORT (comma-separated in PHX_SEEDS)",
    "http": "HOST:PORT",
    "otlp_endpoint": "an http:// or https:// URL, e.g. http://127.0.0.1:4318",
    "role": "member or client",
    "app_version": "a version string such as 1.4.2",
    "cookie_file": "a readable file holding the cluster secret",
    "http_token_file": "a readable file holding the HTTP bearer token",
    "tls_cert": "a PEM certificate file, given with tls_key",
    "tls_key": "a PEM private key file, given with tls_cert",
    "tls_ca": "a PEM CA bundle file",
    "tls_verify_hostname": "true or false (false needs tls_ca)",
    "call_timeout_s": "a number of seconds > 0",
    "idle_timeout_s": "a number of seconds > 0",
    "shutdown_timeout_s": "a number of seconds > 0",
    "join_timeout_s": "a number of seconds > 0",
    "seed_timeout_s": "a number of seconds > 0",
    "passivation_sweep_s": "a number of seconds > 0",
    "mailbox_limit": "an integer > 0",
    "max_message_bytes": "an integer > 0",
    "max_frame_bytes": "an integer > 0",
    "log_level": "debug, info, warning or error",
    "log_format": "text or json",
}


_REGEX_CHECK = re.compile(r"Expected `str` matching regex '.*?'(?= - at )")


class OneLineError(click.ClickException):
    """A configuration error: one line on stderr, exit code 2, no usage text."""

    exit_code = EXIT_CONFIG

    def show(self, file: IO[Any] | None = None) -> None:
        message = " ".join(self.format_message().split())  # never more than one line
        click.echo(f"phx node: error: {message}", file=file or sys.stderr)


class NodeCommand(click.Command):
    """Reports click's own parse errors (bad flag values, unknown flags) in one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.BadParameter as exc:
            key = exc.param.name if exc.param is not None and exc.param.name else "?"
            message = f"bad setting {key} (from arguments): {exc.format_message()}"
            if key in _FORMS:
                message = f"{message.rstrip('.')}; expected {_FORMS[key]}"
            raise OneLineError(message) from None
        except click.UsageError as exc:
            raise OneLineError(exc.format_message()) from None


def config_error_line(exc: ConfigError) -> str:
    """The one line that says what is wrong with a setting and what form it expects."""
    message = str(exc)
    form = _FORMS.get(exc.key)
    if form is not None:
        # msgspec states a pattern check as the regex itself; say what it means instead.
        message, n = _REGEX_CHECK.subn(f"Expected {form}", message)
        if n == 0 and form not in message:
            message = f"{message}; expected {form}"
    return message


def store_options(options: tuple[str, ...]) -> dict[str, str] | None:
    """``--store NAME=URL`` flags as a dict (``None``: no flag).

    Raises:
        OneLineError: a flag without ``=``, or a bad name or URL.
    """
    if not options:
        return None
    try:
        return dict(parse_store_option(option) for option in options)
    except ConfigError as exc:
        raise OneLineError(config_error_line(exc)) from None


def _store_passwords(settings: Settings) -> list[str]:
    """The passwords in state store URLs, kept out of the log like the cookie."""
    found = []
    for url in settings.stores.values():
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            found.append(password)
    return found


def _secrets(settings: Settings) -> list[str]:
    """The cluster secrets to keep out of the log: ``cookie`` and the cookie file's text.

    Raises:
        OneLineError: ``cookie_file`` is set but cannot be read or is empty.
    """
    found = [settings.cookie] if settings.cookie else []
    if settings.cookie_file is None:
        return found
    try:
        text = Path(settings.cookie_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OneLineError(
            f"bad setting cookie_file: cannot read {settings.cookie_file!r} ({reason}); "
            f"expected {_FORMS['cookie_file']}"
        ) from None
    if not text:
        raise OneLineError(
            f"bad setting cookie_file: {settings.cookie_file!r} is empty; "
            f"expected {_FORMS['cookie_file']}"
        )
    return [*found, text]


def _check_bindable(key: str, address: str, kind: socket.SocketKind) -> None:
    """Fail in one line, before anything is logged, if ``address`` cannot be bound.

    Binds and closes at once, with the options asyncio's servers use (SO_REUSEADDR on
    TCP), so a port held only by connections in TIME_WAIT passes as it will for the node.
    Port 0 always passes. The node's own bind still reports a port taken in between.
    """
    host, port = parse_address(address)
    if port == 0:
        return
    proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=kind)[0]
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM and os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        raise OneLineError(f"bad setting {key}: cannot listen on {address} ({proto}): "
                           f"{exc.strerror or exc}") from None


def _check_data_dir(data_dir: str) -> None:
    """Fail in one line if ``data_dir`` cannot be created or written (the node would
    create it and its store there at start)."""
    path = Path(data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise OneLineError(f"bad setting data_dir: cannot use {data_dir!r} as a directory "
                           f"for durable state ({exc.strerror or exc}); expected a "
                           "writable directory") from None


def _check_ports(settings: Settings) -> None:
    """Fail in one line if the peer, gossip or HTTP address cannot be bound."""
    if settings.listen is not None:
        _check_bindable("listen", settings.listen, socket.SOCK_STREAM)
        _check_bindable("listen", gossip_address(settings.listen), socket.SOCK_DGRAM)
    if settings.http is not None:
        _check_bindable("http", settings.http, socket.SOCK_STREAM)


def _agent_classes() -> set[type[Agent]]:
    found: set[type[Agent]] = set()
    todo = list(Agent.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def import_modules(names: tuple[str, ...]) -> int:
    """Import ``names`` so their Agent subclasses register; return how many kinds they define."""
    # Like ``python -m`` and uvicorn: modules in the working directory are importable.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    modules: list[ModuleType] = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # any failure while importing user code is a config error
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise OneLineError(
                f"--import {name}: cannot import module {name!r} ({detail}); "
                "expected an importable module name, e.g. myapp.agents"
            ) from None
    prefixes = tuple(m.__name__ for m in modules)
    return sum(
        1
        for cls in _agent_classes()
        if cls.__module__ in prefixes or cls.__module__.startswith(tuple(p + "." for p in prefixes))
    )


def checked_settings(
    overrides: dict[str, Any], config_file: str | None
) -> tuple[Settings, list[str]]:
    """The node's settings (``overrides`` > ``PHX_*`` > ``phoenix.toml`` > defaults), every
    check passed, and the secrets to keep out of the log.

    Raises:
        OneLineError: any configuration mistake (exit code 2).
    """
    try:
        settings = load_settings(overrides, config_file=config_file)
    except ConfigError as exc:
        raise OneLineError(config_error_line(exc)) from None
    if settings.listen is None and settings.role == "member":
        settings = msgspec.structs.replace(settings, listen=DEFAULT_LISTEN)
    if settings.role == "client" and not settings.seeds and settings.discovery is None:
        # A client cannot form a cluster: without a way to find one it could never join.
        raise OneLineError("bad setting seeds: a client node needs --seed or --discovery "
                           "to find its cluster; expected HOST:PORT")
    if settings.http is not None:
        try:
            check_web_extra()
        except ConfigError as exc:  # the form of the address is not what is wrong
            raise OneLineError(str(exc)) from None
    try:
        tls_contexts(settings.tls_cert, settings.tls_key, settings.tls_ca,  # fail early
                     verify_hostname=settings.tls_verify_hostname)
        if settings.discovery is not None:
            discovery_from_spec(settings.discovery)
        checked_lease_spec(settings.split_brain, settings.split_brain_lease)
        parse_chain(settings.transports)
        check_tracing(settings.otlp_endpoint)
        http_token = None
        if settings.http is not None:
            host, _ = check_http_address(settings.http, settings.http_public)
            http_token = load_http_token(settings, public=not is_loopback(host))
        _check_ports(settings)
        if settings.data_dir is not None:
            _check_data_dir(settings.data_dir)
        for store_name, url in settings.stores.items():
            check_store_url(store_name, url)
    except ConfigError as exc:
        raise OneLineError(config_error_line(exc)) from None
    # The Consul ACL token too: consul discovery reads it from the environment, and
    # an error a Consul agent sends back may quote it.
    consul_token = os.environ.get("CONSUL_HTTP_TOKEN", "").strip()
    secrets = [*_secrets(settings), *([http_token] if http_token else []),
               *_store_passwords(settings),
               *([consul_token] if consul_token else [])]
    return settings, secrets
