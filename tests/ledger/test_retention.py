"""DESSERT_LEDGER_RETENTION_DAYS: rows older than that go, once per period, by one of the replicas sharing the
database (under the storage layer's lease, as the auth wing's pruning)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from dessert_mcp.config import ConfigError
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.ledger.retention import retention_chore
from dessert_mcp.ledger.settings import LedgerSettings
from dessert_mcp.storage import Database
from tests.support.auth import Clock
from tests.support.ledger import chain, read_at, window

RETENTION_ENV = "DESSERT_LEDGER_RETENTION_DAYS"


@pytest.mark.parametrize(("raw", "days"), [("", 0), ("0", 0), (" 30 ", 30), ("36500", 36500)])
def test_the_retention_setting_reads_whole_days_and_zero_or_unset_keeps_everything(raw: str, days: int) -> None:
    assert LedgerSettings.from_env({RETENTION_ENV: raw}).retention_days == days
    assert LedgerSettings.from_env({}).retention_days == 0


@pytest.mark.parametrize("raw", ["-1", "1.5", "a week", "36501"])
def test_a_retention_that_is_not_a_whole_number_of_days_is_refused_in_one_line(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"^{RETENTION_ENV} must be a whole number from 0 to 36500") as refused:
        LedgerSettings.from_env({RETENTION_ENV: raw})
    assert "\n" not in str(refused.value)


async def test_retention_deletes_older_rows_once_per_period_across_replicas(tmp_path: Path) -> None:
    rows = chain([-1] * 40, step=timedelta(days=1))  # one row a day for 40 days
    ledger = InMemoryLedger()
    await ledger.record_usage("key:a", window(rows, len(rows)), read_at(rows, len(rows)))
    clock = Clock()
    clock.now = (rows[-1].timestamp + timedelta(hours=1)).timestamp()
    first = Database(f"sqlite:///{tmp_path / 'shared.db'}", clock=clock)
    second = Database(f"sqlite:///{tmp_path / 'shared.db'}", clock=clock)
    replicas = [retention_chore(db, ledger, 30, clock=clock, every_s=600) for db in (first, second)]
    try:
        turns = await asyncio.gather(*(chore.once() for chore in replicas * 2))
        assert sorted(t for t in turns if t is not None) == [10]  # one replica pruned: days 0-9 are over 30 days old
        assert [t for t in turns if t is None] == [None] * 3
        [status] = (await ledger.status()).accounts
        assert status.rows == 30
        assert status.oldest_at is not None
        assert status.oldest_at >= rows[-1].timestamp - timedelta(days=30)
        clock.advance(601)
        turns = await asyncio.gather(*(chore.once() for chore in replicas))
        assert sorted(turns, key=lambda t: t is None) == [0, None]  # the next period: one turn, nothing more to go
    finally:
        await first.aclose()
        await second.aclose()
