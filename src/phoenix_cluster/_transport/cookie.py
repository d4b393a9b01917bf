"""Finding, or creating, the cluster secret (the "cookie") that nodes prove to each other.

Precedence: the ``cookie`` argument, then ``PHX_COOKIE``, then ``cookie_file``; with none
of them, ``~/.phoenix/cookie``. For a member node (one that can found a cluster) a cookie
file that does not exist yet is created with 32 random bytes (64 hex characters) from
:mod:`secrets`, so the first node is authenticated without any setup, as Erlang does
with ``~/.erlang.cookie``; the node logs the path. Anything that can only talk to an
existing cluster (a client node, ``phx status``) never creates one: a secret nobody else
holds would authenticate nothing, and a secret file nobody asked for is a surprise.

Like ssh with a private key, a cookie file that group or others can read is refused: a
secret every local user can read protects nothing. New files are created with
``O_CREAT | O_EXCL`` and mode 0600 in one step, so there is no moment in which the
secret sits in a file with looser permissions, and two nodes starting at once cannot
both write one. The secret itself is never logged; only the file's path is.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from phoenix_cluster.errors import ConfigError

__all__ = ["COOKIE_ENV", "COOKIE_BYTES", "default_cookie_path", "resolve_secret"]

COOKIE_ENV = "PHX_COOKIE"
COOKIE_BYTES = 32
"""Random bytes in a generated cookie: 256 bits, beyond guessing."""


def default_cookie_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$HOME/.phoenix/cookie`` (``HOME`` taken from ``environ`` when given)."""
    env = os.environ if environ is None else environ
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".phoenix" / "cookie"


def resolve_secret(
    cookie: str | None,
    cookie_file: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    *,
    create: bool = True,
) -> tuple[bytes, str | None]:
    """Return the cluster secret and the file it came from (``None`` if not a file).

    Args:
        cookie: the secret itself (``cookie=`` / ``--cookie``). Visible in ``ps`` when
            passed on a command line; prefer a file or ``PHX_COOKIE``.
        cookie_file: a file holding the secret; created if it does not exist and
            ``create`` is true.
        environ: where ``PHX_COOKIE`` and ``HOME`` are read (default ``os.environ``).
        create: write a new random secret to a missing file. ``False``: a missing file
            is a :class:`~phoenix_cluster.errors.ConfigError` (nothing is written).

    Returns:
        ``(secret, path)``: log the path so operators can copy the file to other nodes;
        never log the secret.

    Raises:
        phx.ConfigError: the secret is empty, the file cannot be read or created (or
            does not exist and ``create`` is false), or it is readable or writable by
            group or others.
    """
    env = os.environ if environ is None else environ
    if cookie is not None:
        return _check_secret(cookie, "the cookie argument"), None
    from_env = env.get(COOKIE_ENV)
    if from_env is not None:
        return _check_secret(from_env, COOKIE_ENV), None
    path = Path(cookie_file) if cookie_file is not None else default_cookie_path(env)
    path = path.expanduser()
    if not path.exists():
        if not create:
            raise ConfigError(
                f"no cluster secret: set {COOKIE_ENV} or a cookie file (cookie file {path}"
                " does not exist, and only a member node creates one)", key="cookie_file")
        created = _create(path)
        if created is not None:
            return created, str(path)
    return _read(path), str(path)


def _check_secret(value: str, source: str) -> bytes:
    secret = value.strip()
    if not secret:
        raise ConfigError(f"the cluster secret from {source} is empty", key="cookie")
    return secret.encode()


def _create(path: Path) -> bytes | None:
    """Write a new random cookie; ``None`` if another process created the file first."""
    token = secrets.token_hex(COOKIE_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot create cookie file {path}: {exc.strerror or exc}",
                          key="cookie_file") from exc
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot write cookie file {path}: {exc.strerror or exc}",
                          key="cookie_file") from exc
    return token.encode()


def _read(path: Path) -> bytes:
    try:
        st = path.stat()
        if os.name == "posix" and st.st_mode & 0o077:
            raise ConfigError(
                f"cookie file {path} is accessible by group or others (mode"
                f" {stat.S_IMODE(st.st_mode):#o}); run: chmod 600 {path}",
                key="cookie_file",
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read cookie file {path}: {exc.strerror or exc}",
                          key="cookie_file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cookie file {path} is not UTF-8 text", key="cookie_file") from exc
    return _check_secret(text, f"cookie file {path}")
