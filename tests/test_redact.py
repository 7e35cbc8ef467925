"""The key stays out of logs, tracebacks and reprs; only a short fingerprint may show."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest

from dessert_mcp.config import Secret, Settings
from dessert_mcp.redact import (
    MASK,
    QueryFilter,
    RedactingFormatter,
    Redactor,
    configure_logging,
    install_excepthook,
    mask_query,
)
from tests.support.api import assert_no_secret

KEY = "dsk_live_0123456789abcdefghijklmnopqrstuvwxyz"


def test_the_key_and_its_long_fragments_are_redacted_but_short_ones_survive() -> None:
    redact = Redactor(KEY)
    assert redact(f"a {KEY} b") == f"a {MASK} b"
    assert KEY[10:22] not in redact(f"x{KEY[10:22]}x")
    assert redact("dsk_ and 0123") == "dsk_ and 0123"


def test_a_logged_traceback_is_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(Redactor(KEY), "%(message)s"))
    log = logging.getLogger("test_redact_secrets")
    log.addHandler(handler)
    try:
        try:
            raise ValueError(f"upstream said {KEY}")
        except ValueError:
            log.exception("failed with key %s", KEY)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text
    assert KEY not in text
    assert KEY[5:20] not in text


def test_an_uncaught_crash_prints_a_redacted_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    install_excepthook(Redactor(KEY), stream)
    try:
        raise RuntimeError(f"boom {KEY}")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    assert "RuntimeError" in stream.getvalue()
    assert KEY not in stream.getvalue()


def test_reprs_show_no_key_and_the_fingerprint_is_shorter_than_a_redacted_fragment() -> None:
    settings = Settings().with_key(KEY)
    assert KEY not in repr(settings)
    assert KEY not in str(settings.api_key)
    fingerprint = Secret(KEY).fingerprint()
    assert fingerprint.startswith("sha256:")
    assert len(fingerprint.removeprefix("sha256:")) < 8
    assert Redactor(KEY)(fingerprint) == fingerprint


def _json_lines(emit: Callable[[logging.Logger], None], key: str = KEY) -> list[dict[str, Any]]:
    """What `emit` logs through `configure_logging(fmt="json")`, one parsed object per line."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", Redactor(key), stream, fmt="json")
    try:
        emit(logging.getLogger("dessert_mcp"))
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert key not in text
    return [json.loads(line) for line in text.splitlines()]


def test_json_logs_are_one_object_per_line_with_the_calls_fields() -> None:
    (entry,) = _json_lines(
        lambda log: log.warning(
            "%s %s in %.1f ms",
            "dessert.get_balance",
            "rate_limited",
            12.5,
            extra={"tool": "dessert.get_balance", "code": "rate_limited", "duration_ms": 12.5, "request_id": "7"},
        )
    )
    assert entry.pop("time").endswith("Z")
    assert entry == {
        "level": "WARNING",
        "logger": "dessert_mcp",
        "message": "dessert.get_balance rate_limited in 12.5 ms",
        "tool": "dessert.get_balance",
        "code": "rate_limited",
        "duration_ms": 12.5,
        "request_id": "7",
    }


def test_json_logs_redact_the_key_in_messages_fields_and_tracebacks_even_where_json_would_escape_it() -> None:
    key = 'dsk_live_quote"and\\slash_0123456789'

    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError(f"upstream said {key}")
        except ValueError:
            log.exception("failed with %s", key, extra={"request_id": key[2:20]})

    (entry,) = _json_lines(emit, key)
    assert "Traceback" in entry["exception"]
    assert MASK in entry["message"]
    assert MASK in entry["exception"]
    assert MASK in entry["request_id"]
    assert_no_secret(" ".join(map(str, entry.values())), key)  # the decoded values: no escape hides a fragment


def test_a_multi_line_message_stays_on_one_json_line() -> None:
    entries = _json_lines(lambda log: log.info("first\nsecond"))
    assert [e["message"] for e in entries] == ["first\nsecond"]


def test_the_default_log_format_stays_human_readable() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", Redactor(KEY), stream)
    try:
        logging.getLogger("dessert_mcp").info("hello %s", KEY)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert stream.getvalue().rstrip().endswith(f"INFO dessert_mcp: hello {MASK}")


def test_query_values_in_a_logged_request_target_are_masked_and_their_names_kept() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/signin?request=abc123&x&y=", "1.1", 200),
        None,
    )
    assert QueryFilter().filter(record)
    assert record.getMessage() == f'127.0.0.1:5 - "GET /signin?request={MASK}&x&y={MASK} HTTP/1.1" 200'
    assert mask_query("/healthz") == "/healthz"


def test_a_flood_of_failed_accepts_is_logged_once_a_minute_and_other_asyncio_errors_as_they_come() -> None:
    def emit(_logger: logging.Logger) -> None:
        for _ in range(1000):  # what asyncio logs for each accept() at the open-files limit
            logging.getLogger("asyncio").error(
                "socket.accept() out of system resource\nexception: [Errno 24] Too many open files"
            )
        logging.getLogger("asyncio").error("Task exception was never retrieved")

    lines = _json_lines(emit)
    assert [line["message"].split("\n")[0] for line in lines] == [
        "socket.accept() out of system resource",
        "Task exception was never retrieved",
    ]
