"""The key stays out of logs, tracebacks and reprs; only a short fingerprint may show."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from dessert_mcp.config import Secret, Settings
from dessert_mcp.redact import MASK, RedactingFormatter, Redactor, install_excepthook

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
