"""``phx node``: run one node until SIGTERM or SIGINT, then leave gracefully.

Flags left unset are passed on as ``None`` so that ``PHX_*`` variables and
``phoenix.toml`` apply: the precedence (flags > env > toml > defaults) lives in
``load_settings`` alone. Every configuration mistake -- a click parse error, a
``ConfigError``, an unreadable cookie file, a module that fails to import -- ends the
process with exit code 2 and exactly one line on stderr naming the key and the expected
form, never a traceback.

Exit codes: 0 after a signal-initiated graceful shutdown, 1 when the node stopped on its
own (its services failed) or could not start, 2 for configuration errors, 3 when
split-brain resolution downed it and ``on_downed`` is ``exit`` (by default it rejoins as
a new incarnation in the same process), 4 when it joined no cluster within
``join_timeout_s`` (every seed unreachable, or a wrong cookie).

READY is printed only once the node has joined its cluster or formed one (see
``_membership/joining.py``): a supervisor that waits for it gets a node that serves.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, Any
from urllib.parse import urlsplit

import click
import msgspec

from .._agents.agent import Agent
from .._foundation.gc_tuning import tune_for_serving
from .._foundation.settings import Settings, load_settings
from .._membership.discovery_spec import discovery_from_spec
from .._membership.messages import gossip_address
from .._node import DOWNED_PREFIX, Node
from .._splitbrain import EXIT_DOWNED
from .._splitbrain.lease_spec import checked_lease_spec
from .._stores.urls import check_store_url, parse_store_option
from .._telemetry.tracing import check_available as check_tracing
from .._transport.fallback import parse_chain
from .._transport.tcp import parse_address
from .._transport.tls import tls_contexts
from .._web import check_http_address, check_web_extra, is_loopback
from .._web.auth import load_http_token
from ..errors import ConfigError
from .logging_setup import configure_logging

__all__ = [
    "DEFAULT_LISTEN",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_NOT_JOINED",
    "EXIT_OK",
    "NOT_JOINED_PREFIX",
    "exit_code_for",
    "node",
]

DEFAULT_LISTEN = "127.0.0.1:7100"
"""Where ``phx node`` listens unless told otherwise: loopback only."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOT_JOINED = 4

NOT_JOINED_PREFIX = "not joined: "
"""Start of ``stop_reason`` when the node gave up joining after ``join_timeout_s``."""

_log = logging.getLogger("phoenix_cluster.cli")

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


class _OneLineError(click.ClickException):
    """A configuration error: one line on stderr, exit code 2, no usage text."""

    exit_code = EXIT_CONFIG

    def show(self, file: IO[Any] | None = None) -> None:
        message = " ".join(self.format_message().split())  # never more than one line
        click.echo(f"phx node: error: {message}", file=file or sys.stderr)


class _NodeCommand(click.Command):
    """Reports click's own parse errors (bad flag values, unknown flags) in one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.BadParameter as exc:
            key = exc.param.name if exc.param is not None and exc.param.name else "?"
            message = f"bad setting {key} (from arguments): {exc.format_message()}"
            if key in _FORMS:
                message = f"{message.rstrip('.')}; expected {_FORMS[key]}"
            raise _OneLineError(message) from None
        except click.UsageError as exc:
            raise _OneLineError(exc.format_message()) from None


def _config_error_line(exc: ConfigError) -> str:
    message = str(exc)
    form = _FORMS.get(exc.key)
    if form is not None:
        # msgspec states a pattern check as the regex itself; say what it means instead.
        message, n = _REGEX_CHECK.subn(f"Expected {form}", message)
        if n == 0 and form not in message:
            message = f"{message}; expected {form}"
    return message


def exit_code_for(stop_reason: str) -> int:
    """The process exit code for a node that stopped with ``stop_reason``.

    ``0`` when a signal asked it to stop (a graceful shutdown is success); ``3`` when
    split-brain resolution downed it (with ``on_downed = rejoin`` the process rejoins
    instead of exiting); ``4`` when it joined no cluster within ``join_timeout_s``;
    ``1`` for anything else, e.g. ``services failed: ...``.
    """
    if stop_reason.startswith("signal"):
        return EXIT_OK
    if stop_reason.startswith(DOWNED_PREFIX):
        return EXIT_DOWNED
    if stop_reason.startswith(NOT_JOINED_PREFIX):
        return EXIT_NOT_JOINED
    return EXIT_FAILED


def _store_options(options: tuple[str, ...]) -> dict[str, str] | None:
    """``--store NAME=URL`` flags as a dict (``None``: no flag).

    Raises:
        _OneLineError: a flag without ``=``, or a bad name or URL.
    """
    if not options:
        return None
    try:
        return dict(parse_store_option(option) for option in options)
    except ConfigError as exc:
        raise _OneLineError(_config_error_line(exc)) from None


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
        _OneLineError: ``cookie_file`` is set but cannot be read or is empty.
    """
    found = [settings.cookie] if settings.cookie else []
    if settings.cookie_file is None:
        return found
    try:
        text = Path(settings.cookie_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _OneLineError(
            f"bad setting cookie_file: cannot read {settings.cookie_file!r} ({reason}); "
            f"expected {_FORMS['cookie_file']}"
        ) from None
    if not text:
        raise _OneLineError(
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
        raise _OneLineError(f"bad setting {key}: cannot listen on {address} ({proto}): "
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
        raise _OneLineError(f"bad setting data_dir: cannot use {data_dir!r} as a directory "
                            f"for durable state ({exc.strerror or exc}); expected a "
                            "writable directory") from None


def _check_ports(settings: Settings) -> None:
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


def _import_modules(names: tuple[str, ...]) -> int:
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
            raise _OneLineError(
                f"--import {name}: cannot import module {name!r} ({detail}); "
                "expected an importable module name, e.g. myapp.agents"
            ) from None
    prefixes = tuple(m.__name__ for m in modules)
    return sum(
        1
        for cls in _agent_classes()
        if cls.__module__ in prefixes or cls.__module__.startswith(tuple(p + "." for p in prefixes))
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _wait_joined(node: Node) -> bool:
    """Wait until ``node`` joined or formed its cluster; ``False`` if it stopped first
    or gave up after ``join_timeout_s`` (then it is stopping with a reason that says why)."""
    timeout_s = node.settings.join_timeout_s
    joined = asyncio.ensure_future(node.wait_joined())
    stopped = asyncio.ensure_future(node.wait_stopped())
    try:
        await asyncio.wait((joined, stopped), timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (joined, stopped):
            waiter.cancel()
    if node.joined and not stopped.done():
        return True
    if not stopped.done():
        why = node.join_report()
        _log.error("phx node %s joined no cluster within %gs (%s); exiting with code %d",
                   node.name, timeout_s, why, EXIT_NOT_JOINED)
        node.request_shutdown(f"{NOT_JOINED_PREFIX}{why}")
    return False


async def _serve(node: Node, kinds: int) -> str:
    await node.start()
    node.install_signal_handlers()
    if not await _wait_joined(node):
        return await node.wait_stopped()
    # Ready means serving with every replica caught up: a rolling restart takes the
    # next node when this line appears.
    if not await node.wait_caught_up():
        return await node.wait_stopped()
    s = node.settings
    _log.info(
        "phx node %s ready (listen %s, role %s, %d kind%s imported)",
        node.name, node.address or "-", s.role, kinds, "" if kinds == 1 else "s",
    )
    # Startup's objects are never garbage; messages allocate short-lived containers by
    # the thousand (docs/design/performance.md): collect less often from here on.
    tune_for_serving()
    # Machine-readable readiness for supervisors and tests; flushed so pipes see it now.
    sys.stdout.write(f"READY {node.name} {node.address or '-'}\n")
    sys.stdout.flush()
    return await node.wait_stopped()


def _run(node: Node, kinds: int) -> int:
    while True:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                reason = runner.run(_serve(node, kinds))
        except KeyboardInterrupt:  # SIGINT before the handlers were installed
            return 130
        except ConfigError as exc:  # e.g. a port taken since _check_ports looked
            _OneLineError(_config_error_line(exc)).show()
            return EXIT_CONFIG
        except Exception as exc:
            _log.error("phx node %s failed: %s: %s", node.name, type(exc).__name__, exc)
            return EXIT_FAILED
        code = exit_code_for(reason)
        if code == EXIT_DOWNED and node.settings.on_downed == "rejoin":
            again = _rejoining(node, reason)
            if again is not None:
                node = again
                continue
        if code not in (EXIT_OK, EXIT_NOT_JOINED):  # not joined: _wait_joined said why
            _log.error("phx node %s exiting with code %d: %s", node.name, code, reason)
        return code


def _rejoining(node: Node, reason: str) -> Node | None:
    """The node that takes over after ``node`` was downed (``on_downed = rejoin``): same
    name and settings, a new incarnation, empty agents and replicas, seeded with the
    members ``node`` knew. It only joins, never forms a cluster of its own (its own
    address is no seed), so a node downed on a cut-off side waits for the heal.
    ``None`` (then it exits with code 3) when it knew nobody to rejoin through."""
    own = {node.address, node.settings.listen}
    seeds = [m.address for m in node.members()
             if m.role == "member" and m.name != node.name and m.address not in own]
    why = reason.removeprefix(DOWNED_PREFIX)
    if not seeds:
        _log.error("phx node %s was downed (%s) and knows no other member to rejoin"
                   " through", node.name, why)
        return None
    _log.warning("phx node %s was downed (%s); rejoining as a new incarnation through %s"
                 " (--on-downed=exit to exit with code 3 instead)", node.name, why,
                 ", ".join(seeds))
    settings = msgspec.structs.replace(node.settings, name=node.name, seeds=seeds)
    return Node(settings=settings)


@click.command(cls=_NodeCommand)
@click.option("--name", help="Node name in the cluster (default: node-<random hex>).")
@click.option("--listen", metavar="HOST:PORT", help="Address for peer connections.")
@click.option(
    "--seed", "seeds", metavar="HOST:PORT", multiple=True,
    help="A member to join through; repeat for several.",
)
@click.option(
    "--cookie-file", metavar="FILE",
    help="File holding the cluster secret (or set PHX_COOKIE; never on the command line).",
)
@click.option("--tls-cert", metavar="PEM", help="Certificate this node presents (enables TLS).")
@click.option("--tls-key", metavar="PEM", help="Private key of --tls-cert.")
@click.option("--tls-ca", metavar="PEM", help="CA that peers' certificates must chain to "
              "(makes TLS mutual).")
@click.option("--tls-no-verify-hostname", "tls_verify_hostname", flag_value=False,
              default=None, help="Accept any certificate --tls-ca signed, whatever address "
              "was dialled (pod IPs change); needs --tls-ca.")
@click.option("--transports", metavar="CHAIN", help="Protocols to peers in order of "
              "preference, e.g. tcp,http2,quic (docs/transport.md).")
@click.option("--discovery", metavar="SPEC", help="Find seeds with static:, dns:, etcd:, "
              "k8s: or consul: (docs/cluster-setup.md).")
@click.option("--split-brain", type=click.Choice(["keep-majority", "static-quorum",
              "keep-oldest", "lease", "down-all"]), help="Which side of a partition survives.")
@click.option("--split-brain-lease", metavar="SPEC", help="For --split-brain=lease: the lease "
              "service, etcd:http://HOST:PORT/KEY or k8s:NAMESPACE/NAME.")
@click.option("--role", type=click.Choice(["member", "client"]), help="client hosts no agents.")
@click.option("--app-version", metavar="VERSION", help="The application version this member "
              "runs; new activations prefer the newest (rolling upgrades).")
@click.option("--http", metavar="HOST:PORT", help="Read-only HTTP endpoint (off by default).")
@click.option("--otlp-endpoint", metavar="URL", help="Send OpenTelemetry traces to this "
              "OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (extra [otel]; docs/tracing.md).")
@click.option("--http-public", is_flag=True, default=None,
              help="Allow --http on a non-loopback address (it shows members and metrics).")
@click.option("--http-token-file", metavar="FILE", help="File holding the bearer token that "
              "--http requires on all but /metrics and /health/* (or set PHX_HTTP_TOKEN); "
              "mandatory on a non-loopback --http.")
@click.option("--data-dir", metavar="DIR", help="Directory for durable state.")
@click.option("--store", "stores", metavar="NAME=URL", multiple=True,
              help="A state store for kinds declared with store=NAME: sqlite:///PATH or "
              "postgresql://USER@HOST:PORT/DB (extra [postgres]); repeat for several. Put a "
              "password in PHX_STORES or phoenix.toml, not on the command line "
              "(docs/state-stores.md).")
@click.option(
    "--import", "imports", metavar="MODULE", multiple=True,
    help="Import MODULE so its Agent kinds can be hosted; repeat for several.",
)
@click.option("--config", "config_file", metavar="FILE", help="A phoenix.toml to read.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option("--log-format", type=click.Choice(["text", "json"]))
@click.option("--idle-timeout-s", type=float, metavar="SECONDS")
@click.option("--mailbox-limit", type=int, metavar="N")
@click.option("--call-timeout-s", type=float, metavar="SECONDS")
@click.option("--shutdown-timeout-s", type=float, metavar="SECONDS")
@click.option("--join-timeout-s", "--join-timeout", "join_timeout_s", type=float,
              metavar="SECONDS", help="Give up (exit 4) if no cluster is joined or formed "
              "in this time (default 60).")
@click.option("--on-downed", type=click.Choice(["rejoin", "exit"]),
              help="When split-brain resolution downs this node: rejoin as a new "
              "incarnation in this process (default), or exit with code 3.")
def node(
    *,
    name: str | None,
    listen: str | None,
    seeds: tuple[str, ...],
    cookie_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_verify_hostname: bool | None,
    transports: str | None,
    discovery: str | None,
    split_brain: str | None,
    split_brain_lease: str | None,
    role: str | None,
    app_version: str | None,
    http: str | None,
    otlp_endpoint: str | None,
    http_public: bool | None,
    http_token_file: str | None,
    data_dir: str | None,
    stores: tuple[str, ...],
    imports: tuple[str, ...],
    config_file: str | None,
    log_level: str | None,
    log_format: str | None,
    idle_timeout_s: float | None,
    mailbox_limit: int | None,
    call_timeout_s: float | None,
    shutdown_timeout_s: float | None,
    join_timeout_s: float | None,
    on_downed: str | None,
) -> None:
    """Run a node until SIGTERM or SIGINT, then leave the cluster gracefully.

    Settings come from these flags, then PHX_* environment variables, then phoenix.toml
    (--config FILE, PHX_CONFIG, or ./phoenix.toml). Prints "READY <name> <address>" on
    stdout once the node has joined its cluster (or formed one: give every node the same
    --seed list; the first seed forms the cluster) and serves.

    \b
    Exit codes:
      0  graceful shutdown after SIGTERM or SIGINT
      1  the node failed (its services failed, or it could not start)
      2  configuration error, or --http without the web extra (one line on stderr)
      3  downed by split-brain resolution, with --on-downed=exit (by default
         it rejoins the cluster as a new incarnation instead)
      4  joined no cluster within --join-timeout-s (seeds unreachable, wrong cookie)
    """
    overrides: dict[str, Any] = {
        "name": name,
        "listen": listen,
        "seeds": list(seeds) or None,
        "cookie_file": cookie_file,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_ca": tls_ca,
        "tls_verify_hostname": tls_verify_hostname,
        "transports": transports,
        "discovery": discovery,
        "split_brain": split_brain,
        "split_brain_lease": split_brain_lease,
        "role": role,
        "app_version": app_version,
        "http": http,
        "otlp_endpoint": otlp_endpoint,
        "http_public": http_public,
        "http_token_file": http_token_file,
        "data_dir": data_dir,
        "stores": _store_options(stores),
        "log_level": log_level.lower() if log_level else None,
        "log_format": log_format,
        "idle_timeout_s": idle_timeout_s,
        "mailbox_limit": mailbox_limit,
        "call_timeout_s": call_timeout_s,
        "shutdown_timeout_s": shutdown_timeout_s,
        "join_timeout_s": join_timeout_s,
        "on_downed": on_downed,
    }
    try:
        settings = load_settings(overrides, config_file=config_file)
    except ConfigError as exc:
        raise _OneLineError(_config_error_line(exc)) from None
    if settings.listen is None and settings.role == "member":
        settings = msgspec.structs.replace(settings, listen=DEFAULT_LISTEN)
    if settings.role == "client" and not settings.seeds and settings.discovery is None:
        # A client cannot form a cluster: without a way to find one it could never join.
        raise _OneLineError("bad setting seeds: a client node needs --seed or --discovery "
                            "to find its cluster; expected HOST:PORT")
    if settings.http is not None:
        try:
            check_web_extra()
        except ConfigError as exc:  # the form of the address is not what is wrong
            raise _OneLineError(str(exc)) from None
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
        raise _OneLineError(_config_error_line(exc)) from None
    # The Consul ACL token too: consul discovery reads it from the environment, and
    # an error a Consul agent sends back may quote it.
    consul_token = os.environ.get("CONSUL_HTTP_TOKEN", "").strip()
    secrets = [*_secrets(settings), *([http_token] if http_token else []),
               *_store_passwords(settings),
               *([consul_token] if consul_token else [])]
    the_node = Node(settings=settings)
    configure_logging(settings.log_level, settings.log_format, the_node.name, secret=secrets)
    kinds = _import_modules(imports)
    click.get_current_context().exit(_run(the_node, kinds))
