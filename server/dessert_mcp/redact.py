"""Keep the API key out of everything this process prints: logs, errors and tracebacks."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import Final, TextIO

MASK: Final = "[REDACTED]"
# A fragment this long of the key is still too much of it to show.
_FRAGMENT: Final = 8


class Redactor:
    """Replaces a secret, and any run of `_FRAGMENT` or more of its characters, with `[REDACTED]`."""

    def __init__(self, *secrets: str | None) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
            size = min(_FRAGMENT, len(secret))
            if len(text) < size:
                continue
            for start in range(len(secret) - size + 1):
                fragment = secret[start : start + size]
                if fragment in text:
                    text = text.replace(fragment, MASK)
        return text


class RedactingFormatter(logging.Formatter):
    """Formats a record (traceback included), then redacts the result."""

    def __init__(self, redactor: Redactor, fmt: str) -> None:
        super().__init__(fmt)
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def configure_logging(level: str, redactor: Redactor, stream: TextIO | None = None) -> None:
    """Log to stderr only (stdout belongs to the protocol in stdio mode), with the key redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(redactor, "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Request lines from the HTTP client name URLs only, but they are noise at INFO.
    for name in ("httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def install_excepthook(redactor: Redactor, stream: TextIO | None = None) -> None:
    """Print a crash's traceback, which may quote the key from a local or a message, redacted."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        (stream or sys.stderr).write(redactor(text))

    sys.excepthook = hook
