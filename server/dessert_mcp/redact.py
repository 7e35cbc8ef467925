"""Keep the API key out of everything this process prints: logs, errors and tracebacks."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeGuard
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from dessert_mcp.config import LogFormat, Secret, Settings

MASK: Final = "[REDACTED]"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What a call's log line carries besides its message (see tools._call_tool); copied into the JSON object when set.
LOG_FIELDS: Final = ("tool", "code", "duration_ms", "request_id", "trace_id")
# A fragment this long of the key is still too much of it to show.
_FRAGMENT: Final = 8
# A webhook URL's path segment or query value this long may be a credential (Slack's token is 24 characters; ids
# such as T0123ABCD are shorter).
_URL_CREDENTIAL: Final = 16
_ACCEPT_FAILED: Final = "socket.accept() out of system resource"
# At DEBUG these print every statement with its parameters (sealed keys, key and token hashes): never shown.
_DATABASE_LOGGERS: Final = ("sqlalchemy", "aiosqlite", "asyncpg")


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


def mask_query(target: str) -> str:
    """A request target with every query value masked, the names kept: `/signin?request=[REDACTED]`."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = (name + (f"={MASK}" if eq else "") for name, eq, _ in (p.partition("=") for p in query.split("&")))
    return f"{path}?{'&'.join(pairs)}"


class QueryFilter(logging.Filter):
    """Masks query values in a record's arguments. The access log quotes each request target, and some carry a
    capability in the query (the sign-in page's `request` id lets whoever holds it finish that sign-in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_target(a) for a in record.args):
            record.args = tuple(mask_query(a) if _is_target(a) else a for a in record.args)
        return True


def _is_target(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith("/") and "?" in value


class AcceptFailureFilter(logging.Filter):
    """Lets through one of asyncio's "socket.accept() out of system resource" errors per `every_s`.

    asyncio logs each failed accept() with its traceback; at the open-files limit (connections held open by slow
    clients) that was megabytes a minute, which says nothing the first line did not.
    """

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every_s = every_s
        self._clock = clock
        self._next = -math.inf
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "asyncio" or not str(record.msg).startswith(_ACCEPT_FAILED):
            return True
        now = self._clock()
        if now < self._next:
            self._dropped += 1
            return False
        self._next = now + self._every_s
        if self._dropped:
            record.msg = f"{record.msg}\n({self._dropped} more like it since the last one were not logged)"
            self._dropped = 0
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, the call's fields, the traceback.

    Each string is redacted before it is encoded, so JSON escaping cannot hide the key from the redactor.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        for name in LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = self._redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self._redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, redactor: Redactor, stream: TextIO | None = None, *, fmt: LogFormat = "text") -> None:
    """Log to stderr only (stdout belongs to the protocol in stdio mode), with the key redacted.

    `fmt` "json" (DESSERT_MCP_LOG_FORMAT) writes one JSON object per line, for log collectors.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JSONFormatter(redactor) if fmt == "json" else RedactingFormatter(redactor, TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(QueryFilter())
    handler.addFilter(AcceptFailureFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Request lines from the HTTP client name URLs only, but they are noise at INFO.
    for name in ("httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in _DATABASE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def redactor_for(settings: Settings, *secrets: Secret | None) -> Redactor:
    """The redactor of the settings' secrets (the key, the webhook secret, the credentials in webhook URLs) and
    `secrets`."""
    found = [s.get() for s in (settings.api_key, settings.alert_webhook_secret, *secrets) if s is not None]
    return Redactor(*found, *(part for url in settings.alert_webhook_urls for part in url_credentials(url.get())))


def url_credentials(url: str) -> list[str]:
    """The parts of a URL that can be its credential: path segments and query values of `_URL_CREDENTIAL` or more
    characters (Slack's and Discord's webhook tokens); the whole URL is not one, or every `https://` would go."""
    parts = urlsplit(url)
    pieces = [*parts.path.split("/"), *(value for _, _, value in (p.partition("=") for p in parts.query.split("&")))]
    return [piece for piece in pieces if len(piece) >= _URL_CREDENTIAL]


def configure_logging_for(settings: Settings, *secrets: Secret | None) -> Redactor:
    """`configure_logging` at the settings' level and format, hiding their secrets and `secrets`; returns the
    redactor."""
    redactor = redactor_for(settings, *secrets)
    configure_logging(settings.log_level, redactor, fmt=settings.log_format)
    return redactor


def install_excepthook(redactor: Redactor, stream: TextIO | None = None) -> None:
    """Print a crash's traceback, which may quote the key from a local or a message, redacted."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        (stream or sys.stderr).write(redactor(text))

    sys.excepthook = hook
