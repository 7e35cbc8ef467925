"""Where a database is: the URLs operators write, the async driver each needs, and the default SQLite files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs

APP_NAME = "dessert-mcp"
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """Accept the URLs operators have (`postgresql://`, `postgres://`, `sqlite:///`) and pick the async driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DESSERT_MCP_DATABASE_URL must look like postgresql://user:pass@host/db or sqlite:///path")
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(f"DESSERT_MCP_DATABASE_URL: unsupported database {scheme!r} (use postgresql or sqlite)")
    return f"{driver}://{rest}"


def describe_database_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def sqlite_file(url: str) -> str:
    """The file a SQLite URL names; "" for PostgreSQL and for an in-memory database."""
    if not url.startswith("sqlite"):
        return ""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return "" if path == ":memory:" else path


def user_database_url(filename: str, *, kind: Literal["data", "state"] = "data") -> str:
    """A SQLite file in the platform's user data (or state) directory, e.g. ~/.local/share/dessert-mcp/ on Linux.

    Read at call time, so XDG_DATA_HOME / XDG_STATE_HOME set by a test or a service manager are honoured. The
    directory and the file are created owner-only when the database is first opened.
    """
    find = platformdirs.user_data_path if kind == "data" else platformdirs.user_state_path
    return "sqlite+aiosqlite:///" + str(Path(find(APP_NAME, appauthor=False)) / filename)
