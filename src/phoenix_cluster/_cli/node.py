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

This module is the command line; settings resolution and its checks live in
``node_config.py``, serving, signals and exit codes in ``node_lifecycle.py``.
"""

from __future__ import annotations

from typing import Any

import click

from .._node import Node
from .logging_setup import configure_logging
from .node_config import (
    DEFAULT_LISTEN,
    EXIT_CONFIG,
    NodeCommand,
    checked_settings,
    import_modules,
    store_options,
)
from .node_lifecycle import (
    EXIT_FAILED,
    EXIT_NOT_JOINED,
    EXIT_OK,
    NOT_JOINED_PREFIX,
    exit_code_for,
    run_node,
)

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


@click.command(cls=NodeCommand)
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
        "stores": store_options(stores),
        "log_level": log_level.lower() if log_level else None,
        "log_format": log_format,
        "idle_timeout_s": idle_timeout_s,
        "mailbox_limit": mailbox_limit,
        "call_timeout_s": call_timeout_s,
        "shutdown_timeout_s": shutdown_timeout_s,
        "join_timeout_s": join_timeout_s,
        "on_downed": on_downed,
    }
    settings, secrets = checked_settings(overrides, config_file)
    the_node = Node(settings=settings)
    configure_logging(settings.log_level, settings.log_format, the_node.name, secret=secrets)
    kinds = import_modules(imports)
    click.get_current_context().exit(run_node(the_node, kinds))
