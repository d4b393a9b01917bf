"""``configure_logging``: one line per record, text or JSON, the cookie never shown."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from phoenix_cluster._cli.logging_setup import configure_logging

SECRET = "hunter2-cluster-cookie"
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"\[(?P<node>[^\]]+)\] (?P<msg>.*)$"
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A stream to log to; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_format(stream: io.StringIO) -> None:
    configure_logging("info", "text", "node-a", stream=stream)
    logging.getLogger("phoenix_cluster.node").info("node %s started", "node-a")
    [line] = lines(stream)
    m = TEXT_LINE.match(line)
    assert m is not None, line
    assert m.group("level", "logger", "node", "msg") == (
        "INFO", "phoenix_cluster.node", "node-a", "node node-a started",
    )


def test_level_filters_records(stream: io.StringIO) -> None:
    configure_logging("WARNING", "text", "n", stream=stream)
    log = logging.getLogger("phoenix_cluster.test")
    log.info("hidden")
    log.warning("shown")
    matches = [TEXT_LINE.match(x) for x in lines(stream)]
    assert [m.group("msg") if m else None for m in matches] == ["shown"]


def test_json_format(stream: io.StringIO) -> None:
    configure_logging("debug", "json", "node-b", stream=stream)
    logging.getLogger("phoenix_cluster.x").debug("multi\nline %d", 7)
    [line] = lines(stream)
    record = json.loads(line)
    assert record["level"] == "DEBUG"
    assert record["logger"] == "phoenix_cluster.x"
    assert record["node"] == "node-b"
    assert record["msg"] == "multi\nline 7"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert "exc" not in record


def test_exceptions_stay_on_one_line(stream: io.StringIO) -> None:
    configure_logging("info", "json", "n", stream=stream)
    log = logging.getLogger("phoenix_cluster.x")
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("it failed")
    configure_logging("info", "text", "n", stream=stream)
    try:
        raise KeyError("other")
    except KeyError:
        log.exception("text failed")
    json_line, text_line = lines(stream)
    record = json.loads(json_line)
    assert record["msg"] == "it failed"
    assert "Traceback" in record["exc"]
    assert "ValueError: bad thing" in record["exc"]
    assert "text failed | Traceback" in text_line
    assert "KeyError: 'other'" in text_line


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    before = len(logging.getLogger().handlers)
    configure_logging("info", "text", "first", stream=stream)
    configure_logging("info", "text", "second", stream=stream)
    assert len(logging.getLogger().handlers) == before + 1
    logging.getLogger("phoenix_cluster.x").info("once")
    [line] = lines(stream)
    assert "[second] once" in line


def test_secret_is_redacted_in_message_args_and_traceback(stream: io.StringIO) -> None:
    configure_logging("info", "json", "n", secret=SECRET, stream=stream)
    log = logging.getLogger("some.user.module")
    log.info(f"literal {SECRET} in the message")
    log.info("as an argument: %s", SECRET)
    log.info("inside a structure: %r", {"cookie": SECRET})
    try:
        raise RuntimeError(f"cookie was {SECRET}")
    except RuntimeError:
        log.exception("failure")
    out = stream.getvalue()
    assert SECRET not in out
    records = [json.loads(x) for x in lines(stream)]
    assert records[0]["msg"] == "literal *** in the message"
    assert records[1]["msg"] == "as an argument: ***"
    assert "***" in records[2]["msg"]
    assert "RuntimeError: cookie was ***" in records[3]["exc"]


def test_no_secret_means_no_redaction(stream: io.StringIO) -> None:
    configure_logging("info", "text", "n", secret=None, stream=stream)
    logging.getLogger("x").info("%s and %d", "plain", 3)
    assert lines(stream)[0].endswith("[n] plain and 3")


@pytest.mark.parametrize(("level", "fmt"), [("loud", "text"), ("info", "xml")])
def test_bad_level_or_format(stream: io.StringIO, level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        configure_logging(level, fmt, "n", stream=stream)  # type: ignore[arg-type]


def test_several_secrets_are_all_redacted(stream: io.StringIO) -> None:
    secrets = ["from-env-cookie", "from-file-cookie"]
    configure_logging("info", "text", "n", secret=secrets, stream=stream)
    logging.getLogger("x").info("a=%s b=%s", "from-env-cookie", "from-file-cookie")
    assert lines(stream)[0].endswith("a=*** b=***")


@pytest.mark.parametrize("secret", [SECRET, None], ids=["with-secret", "without"])
def test_a_malformed_format_string_is_one_redacted_line(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str], secret: str | None
) -> None:
    handler = configure_logging("info", "text", "n", secret=secret, stream=stream)
    # Only our handler sees the record: pytest's own capture handler fails a test on a
    # bad format string by design.
    careless = logging.getLogger("careless")
    careless.propagate = False
    careless.addHandler(handler)
    try:
        careless.warning("two values %d %d", SECRET)  # wrong count and type
    finally:
        careless.removeHandler(handler)
        careless.propagate = True
    (line,) = lines(stream)
    assert "two values %d %d [unformattable log call: TypeError" in line
    if secret is not None:
        assert SECRET not in line and "arguments ('***',)" in line
    # The logging module's own error report (a traceback with the raw arguments) is
    # never printed.
    assert capsys.readouterr().err == ""
