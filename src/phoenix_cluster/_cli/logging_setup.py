"""Logging for ``phx`` processes: one line per record, text or JSON, secrets redacted.

Owns the root logger's Phoenix handler in CLI processes; a library embedding
:class:`~phoenix_cluster.Node` configures logging itself and never calls this.

Text lines read ``2026-11-28T16:38:29.123Z INFO phoenix_cluster.node [node-a] message``
(``[node-a trace=<id>]`` while a traced call runs); JSON lines are one object each with
``ts``, ``level``, ``logger``, ``node``, ``msg`` and, when present, ``trace_id`` and
``exc``. Either way a record is exactly one line
(newlines inside messages and tracebacks are escaped as ``\\n``), so log shippers never
split a traceback across records.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import IO, Literal

import msgspec

from .._telemetry.tracing import current_trace_id

__all__ = ["REDACTED", "JsonFormatter", "RedactSecrets", "TextFormatter", "configure_logging"]

REDACTED = "***"
"""What a secret is replaced with in log output."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Marks the handler this module installed, so calling configure_logging again replaces it
# instead of stacking a second handler (and never removes handlers it did not install).
_MARK = "_phoenix_cli_handler"


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with milliseconds and a "Z": sortable, and the same on every node.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _exc_text(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [p for p in (record.exc_text, record.stack_info) if p]
    return "\n".join(parts)


class RedactSecrets(logging.Filter):
    """Replace every occurrence of the given secrets in a record with ``***``.

    Attach it to a *handler* (not a logger) so it also sees records that propagate up
    from child loggers. It rewrites the record's message (arguments merged in) and its
    exception text; it never drops a record.

    Args:
        secrets: the values to hide; empty strings and ``None`` are ignored.
    """

    def __init__(self, secrets: list[str | None]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:
            # A broken format string (``log.info("%d", "x")``). Left to the handler, it
            # would print a traceback with the raw arguments, secrets included, over many
            # lines: say it here in one redacted line instead.
            message = (f"{record.msg!s} [unformattable log call: {type(exc).__name__}: "
                       f"{exc}; arguments {record.args!r}]")
        else:
            if not self._secrets:
                return True
        record.msg = self._redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger> [<node>] <message>``, one line per record."""

    def __init__(self, node_name: str) -> None:
        super().__init__()
        self.node_name = node_name

    def format(self, record: logging.LogRecord) -> str:
        trace_id = current_trace_id.get()
        where = self.node_name if trace_id is None else f"{self.node_name} trace={trace_id}"
        line = (
            f"{_timestamp(record)} {record.levelname} {record.name} "
            f"[{where}] {record.getMessage()}"
        )
        exc = _exc_text(record, self)
        if exc:
            line = f"{line} | {exc}"
        return _one_line(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``node``, ``msg``, and
    ``trace_id`` / ``exc`` when there is one."""

    def __init__(self, node_name: str) -> None:
        super().__init__()
        self.node_name = node_name
        self._encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, str] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "node": self.node_name,
            "msg": record.getMessage(),
        }
        trace_id = current_trace_id.get()
        if trace_id is not None:
            obj["trace_id"] = trace_id
        exc = _exc_text(record, self)
        if exc:
            obj["exc"] = exc
        # JSON escapes control characters, so the encoded object is always one line.
        return self._encoder.encode(obj).decode()


def configure_logging(
    level: str,
    fmt: Literal["text", "json"],
    node_name: str,
    *,
    secret: str | Iterable[str] | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record of this process to ``stream`` (default stderr), one line each.

    Calling it again replaces the handler it installed before (e.g. once the node's name
    is known); handlers installed by others are left alone.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error`` (any case); applied to the
            root logger.
        fmt: ``text`` for people, ``json`` for log pipelines.
        node_name: shown on every line, so merged logs of a cluster stay readable.
        secret: the cluster cookie (or several secrets); every occurrence in a message or
            traceback is replaced with ``***``.
        stream: where to write (default ``sys.stderr``, looked up at call time).

    Returns:
        The installed handler (tests remove it with ``logging.getLogger().removeHandler``).

    Raises:
        ValueError: ``level`` or ``fmt`` is not one of the names above.
    """
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    formatter: logging.Formatter
    if fmt == "text":
        formatter = TextFormatter(node_name)
    elif fmt == "json":
        formatter = JsonFormatter(node_name)
    else:
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    secrets: list[str | None] = [secret] if secret is None or isinstance(secret, str) else [*secret]
    handler.addFilter(RedactSecrets(secrets))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
