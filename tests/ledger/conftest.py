"""The ledger's tests: every backend (in memory, SQLite, PostgreSQL) behind one factory fixture.

`--hypothesis-profile=ledger` runs the merge's property tests far longer than the default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import settings

from dessert_mcp.ledger import InMemoryLedger, Ledger
from dessert_mcp.ledger.database import DatabaseLedger
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.models import USAGE_FEED_SIZE
from dessert_mcp.storage import Database
from tests.support.postgres import Postgres, postgres

__all__ = ["postgres"]

settings.register_profile("ledger", max_examples=3000)

MakeLedger = Callable[..., Ledger]


def open_database_ledger(url: str, *, feed_size: int = USAGE_FEED_SIZE) -> DatabaseLedger:
    return DatabaseLedger(Database(url, schemas=[LEDGER_SCHEMA], label="ledger database"), feed_size=feed_size)


def _url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.database()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's ledger lives: "memory", a SQLite file, or a fresh PostgreSQL database."""
    return _url(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file or a fresh PostgreSQL database."""
    return _url(request, tmp_path)


@pytest.fixture
async def make_ledger(backend_url: str) -> AsyncIterator[MakeLedger]:
    """Opens ledgers on the test's backend (each call a new one, on the same database), and closes them after."""
    opened: list[Ledger] = []

    def make(*, feed_size: int = USAGE_FEED_SIZE) -> Ledger:
        made: Ledger = (
            InMemoryLedger(feed_size=feed_size)
            if backend_url == "memory"
            else open_database_ledger(backend_url, feed_size=feed_size)
        )
        opened.append(made)
        return made

    yield make
    for made in opened:
        await made.aclose()


@pytest.fixture
def ledger(make_ledger: MakeLedger) -> Ledger:
    return make_ledger()
