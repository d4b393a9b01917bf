"""All node settings in one typed object, every default explained once.

Precedence, highest first: explicit arguments (CLI flags or ``Node(...)`` keywords), then
``PHX_*`` environment variables, then a ``phoenix.toml`` file, then the defaults below.
A value of the wrong form raises :class:`~phoenix_cluster.errors.ConfigError` naming the
key, the expected form and what arrived.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from ..errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "redact_url"]

ENV_PREFIX = "PHX_"

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
HostPort = Annotated[str, msgspec.Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")]
OtlpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+(/\S*)?$")]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a node can be told. Units are in the names (``_s`` seconds, ``_bytes``)."""

    name: str | None = None
    """The node's name in the cluster. Default: ``node-`` plus random hex, so two nodes
    started without names never collide."""

    listen: HostPort | None = None
    """Address for peer connections (port 0 picks a free one). ``None``: an embedded node
    that accepts no peers. ``phx node`` defaults to ``127.0.0.1:7100``: loopback, because
    exposing a node is a decision."""

    seeds: list[HostPort] = []
    """Addresses of existing members to join through. Give every node the same list,
    its own address included: the node that is the first entry forms the cluster when
    none of the others answers (within ``seed_timeout_s``); the others only join. A
    node whose list holds only itself forms a cluster of one at once."""

    join_timeout_s: PositiveFloat = 60.0
    """How long ``phx node`` waits to join (or form) its cluster before it gives up and
    exits with code 4, naming each seed and why it failed (unreachable, wrong cookie).
    It prints READY only once joined."""

    seed_timeout_s: PositiveFloat = 5.0
    """How long the first seed waits for another node to answer before it forms a
    cluster of one (Akka's ``seed-node-timeout``); a member that only uses discovery
    forms one after this long only if no discovered address sorts before its own.
    Longer is safer for a first seed restarted while the others are briefly slow."""

    cookie: str | None = None
    """The cluster secret. Prefer ``cookie_file`` or ``PHX_COOKIE``: argv is visible to
    every user of the machine. Never logged."""

    cookie_file: str | None = None
    """File holding the cluster secret (mode 0600)."""

    transports: str = "tcp"
    """Protocols to peers in order of preference, e.g. ``tcp,http2,quic``: per peer the
    first that works is used, and traffic switches back when a preferred one recovers.
    HTTP/2 listens on TCP port + 1, QUIC on UDP port + 1 (extras ``[http2]``, ``[quic]``)."""

    tls_cert: str | None = None
    """PEM certificate (chain) this node presents to peers; enables TLS with ``tls_key``."""

    tls_key: str | None = None
    """PEM private key of ``tls_cert``."""

    tls_ca: str | None = None
    """PEM CA bundle that peers' certificates must chain to; makes TLS mutual. Without
    it, servers do not ask for client certificates and clients trust the system CAs."""

    tls_verify_hostname: bool = True
    """Whether a dialled peer's certificate must name the address dialled (TCP and
    HTTP/2). Turn it off where addresses change (Kubernetes pod IPs); then ``tls_ca`` is
    required and must be a CA that signs only this cluster's certificates."""

    role: Literal["member", "client"] = "member"
    """``client`` nodes route messages but host no agents."""

    app_version: str = ""
    """The version of the application this member runs (``1.4.2``, ``2026.12.1``...;
    dotted numbers compare numerically). During a rolling upgrade new activations prefer
    the members of the newest version, and members of an older one hand their agents
    to them (docs/operations.md, "Rolling upgrades"). Empty: older than any version."""

    discovery: str | None = None
    """Where to find seeds besides ``seeds``: ``static:``, ``dns:``, ``etcd:``, ``k8s:`` or
    ``consul:`` spec (see docs/cluster-setup.md). Polled with backoff; never blocks."""

    probe_interval_s: PositiveFloat = 0.3
    """SWIM: how often each node probes one random member. With the timeouts below a
    crashed node is declared dead in about 1.2-1.6 s (docs/benchmarks.md, "Membership");
    raise all three on slow networks."""

    probe_timeout_s: PositiveFloat = 0.2
    """SWIM: how long a direct probe waits for its ack before indirect probes."""

    suspicion_mult: PositiveInt = 2
    """SWIM: suspicion lasts ``suspicion_mult * log10(n) * probe_interval_s`` (at least
    ``suspicion_mult`` intervals) before a suspect is declared dead, longer while this
    node's own event loop lags (Lifeguard)."""

    split_brain: Literal["keep-majority", "static-quorum", "keep-oldest", "lease", "down-all"] = (
        "keep-majority"
    )
    """Which side of a partition keeps running; the other downs itself (exit code 3).
    ``lease`` needs ``split_brain_lease``."""

    split_brain_stable_after_s: PositiveFloat = 7.0
    """How long the set of unreachable members must stay unchanged before deciding."""

    split_brain_quorum_size: PositiveInt | None = None
    """For ``static-quorum``: members a side needs to survive."""

    split_brain_lease: str | None = None
    """For ``lease``: the lease service whose holder survives a partition,
    ``etcd:http://HOST:PORT/KEY`` or ``k8s:NAMESPACE/NAME`` (a ``coordination.k8s.io``
    Lease; in a pod the API server comes from ``KUBERNETES_SERVICE_*``). Every node of a
    cluster names the same lease."""

    split_brain_lease_ttl_s: PositiveFloat = 60.0
    """For ``lease``: how long the winning side holds the lease; it must exceed the time
    the losing side needs to decide (``split_brain_stable_after_s`` plus margin)."""

    on_downed: Literal["rejoin", "exit"] = "rejoin"
    """What ``phx node`` does when split-brain resolution downed it: ``rejoin`` stops
    serving, drops its agents and replicas and joins again through the members it knew,
    as a new incarnation in the same process (its replicas re-sync from the majority);
    ``exit`` ends the process with code 3, for orchestrators that prefer to restart it."""

    http: HostPort | None = None
    """Address of the read-only HTTP endpoint (metrics, health, dashboard); off by default."""

    http_public: bool = False
    """Allow ``http`` to bind a non-loopback address. Off: the endpoint shows members,
    agents and metrics to whoever reaches it, so exposing it is an explicit decision.
    A non-loopback bind also needs ``http_token`` or ``http_token_file``."""

    http_token: str | None = None
    """Bearer token the HTTP endpoint requires on every route but ``/metrics`` and
    ``/health/*`` (``Authorization: Bearer <token>``). Prefer ``http_token_file`` or
    ``PHX_HTTP_TOKEN``: argv is visible to every user of the machine. Never logged."""

    http_token_file: str | None = None
    """File holding ``http_token`` (e.g. a mounted Kubernetes Secret); read at start."""

    otlp_endpoint: OtlpUrl | None = None
    """OpenTelemetry collector to send traces to over OTLP/HTTP (protobuf), e.g.
    ``http://127.0.0.1:4318`` (``/v1/traces`` is appended unless the URL has a path).
    ``None``: tracing is off and costs nothing. Needs the ``[otel]`` extra; see
    docs/tracing.md."""

    data_dir: str | None = None
    """Directory for durable state; ``None`` keeps state in memory (and in replicas)."""

    stores: dict[str, str] = {}
    """State stores by name, for kinds declared with ``store="NAME"``: ``{"main":
    "sqlite:///var/lib/phoenix/state.db"}`` or ``postgresql://USER:PASSWORD@HOST/DB``
    (extra ``[postgres]``). Such a kind commits to its store instead of the replicas,
    so its state survives a restart of the whole cluster (docs/state-stores.md).
    ``PHX_STORES``: ``NAME=URL`` items separated by commas. Passwords never show in
    a repr or a log line."""

    call_timeout_s: PositiveFloat = 5.0
    """Default timeout of a call; override per call with ``ref.options(timeout=...)``."""

    idle_timeout_s: PositiveFloat = 300.0
    """Default time an agent stays active without messages before it is passivated
    (its state is kept). Kinds override it with ``idle_timeout=``."""

    mailbox_limit: PositiveInt = 10_000
    """Default bound of an agent's mailbox; past it a call or cast waits for room, up to
    its timeout, then fails with ``Overloaded`` (nothing queued). Kinds override it with
    ``mailbox_limit=``."""

    passivation_sweep_s: PositiveFloat = 1.0
    """How often idle activations are looked for. One sweep per node, not a timer per
    agent, so idle agents cost no task and no timer."""

    shutdown_timeout_s: PositiveFloat = 10.0
    """On shutdown, how long in-flight messages may take to finish before agents are
    deactivated regardless."""

    max_message_bytes: PositiveInt = 16 * 1024 * 1024
    """Largest encoded arguments of one call or cast, and largest encoded result: the
    one message-size limit, the same on an embedded node and on a cluster. Past it the
    caller gets ``SerializationError`` stating the size and the limit; nothing is sent.
    Keep ``max_frame_bytes`` at least 64 KiB above it (room for kind, key and headers)."""

    max_frame_bytes: PositiveInt = 16 * 1024 * 1024 + 64 * 1024
    """Largest frame accepted from a peer; checked before the body is read. Default:
    ``max_message_bytes`` plus 64 KiB for the frame's envelope."""

    handshake_timeout_s: PositiveFloat = 5.0
    """Time a new connection has to authenticate before it is dropped (slow-loris peers
    cannot hold sockets open)."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    def __repr__(self) -> str:
        # Secrets never reach a log line or a traceback through a repr.
        values = msgspec.structs.asdict(self)
        values["stores"] = {name: redact_url(url) for name, url in self.stores.items()}
        shown = ", ".join(
            f"{f}={'***' if f in _SECRET_FIELDS and v is not None else repr(v)}"
            for f, v in values.items()
        )
        return f"Settings({shown})"


_SECRET_FIELDS = frozenset({"cookie", "http_token"})


_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field_name in _FIELDS:
        raw = environ.get(ENV_PREFIX + field_name.upper())
        if raw is None:
            continue
        if field_name == "seeds":
            out[field_name] = [s.strip() for s in raw.split(",") if s.strip()]
        elif field_name == "stores":
            items = [item.strip() for item in raw.split(",") if item.strip()]
            out[field_name] = dict(item.partition("=")[::2] for item in items)
        else:
            out[field_name] = raw
    return out


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for reprs and log lines)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL at all: show nothing of it that could be secret
        return "<unparsable URL>"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})", key=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", key=str(path)) from exc
    node = data.get("node", data)
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: [node] must be a table", key="node")
    return dict(node)


def _convert(merged: dict[str, Any], sources: dict[str, str]) -> Settings:
    for key in merged:
        if key not in _FIELDS:
            raise ConfigError(
                f"unknown setting {key!r} (from {sources.get(key, 'arguments')}); "
                f"known: {', '.join(sorted(_FIELDS))}",
                key=key,
            )
    try:
        # strict=False lets "5" from the environment become 5.
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        key = text.rsplit("$.", 1)[-1].split("[")[0].rstrip("`") if "$." in text else ""
        where = sources.get(key, "arguments")
        got = f" (got {merged[key]!r})" if key in merged else ""
        raise ConfigError(f"bad setting {key or '?'} (from {where}): {text}{got}", key=key) from exc
    for key in ("listen", "http"):
        value = getattr(settings, key)
        if value is not None:
            _check_port(key, value, sources)
    for seed in settings.seeds:
        _check_port("seeds", seed, sources)
    return settings


def _check_port(key: str, address: str, sources: dict[str, str]) -> None:
    port = int(address.rsplit(":", 1)[1])
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"bad setting {key} (from {sources.get(key, 'arguments')}): "
            f"Expected HOST:PORT with a port in 0..65535 (got {address!r})",
            key=key,
        )


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Build :class:`Settings` from arguments, ``PHX_*`` variables and ``phoenix.toml``.

    Args:
        overrides: explicit values (flags or keywords); ``None`` values are ignored.
        environ: the environment to read (default ``os.environ``).
        config_file: a TOML file; default ``phoenix.toml`` in the working directory if it
            exists (or the file named by ``PHX_CONFIG``).

    Raises:
        ConfigError: a key is unknown or a value has the wrong form.
    """
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
    elif env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    else:
        default = Path("phoenix.toml")
        path = default if default.is_file() else None
    if path is not None:
        for key, value in _from_toml(path).items():
            merged[key] = value
            sources[key] = str(path)
    for key, value in _from_env(env).items():
        merged[key] = value
        sources[key] = ENV_PREFIX + key.upper()
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value
            sources[key] = "arguments"
    return _convert(merged, sources)
