"""Replicas sharing one database keep one alert per firing: whichever fires (or clears) it first is the one told it
did, so one alert id exists, one replica publishes it, and the others read it back. On a SQLite file and on
PostgreSQL, and in the in-process store the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta

import anyio
import pytest

from dessert_mcp.alerts import ALERTS_URI, AlertStore, InMemoryAlertStore, Thresholds, Watcher
from dessert_mcp.alerts.database import ALERTS_SCHEMA, DatabaseAlertStore
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.storage import Database
from tests.alerts.test_rules import ACCOUNT, Clock, Published, balance
from tests.support.ledger import T0, chain, window
from tests.support.postgres import database_url, postgres

__all__ = ["database_url", "postgres"]

REPLICAS = 3
Stores = Callable[[], AlertStore]


@pytest.fixture
async def replica_store(database_url: str) -> AsyncIterator[Stores]:
    """Each call: a store on its own engine and pool over the one database, as another replica's would be."""
    opened: list[Database] = []

    def make() -> AlertStore:
        opened.append(Database(database_url, schemas=[LEDGER_SCHEMA, ALERTS_SCHEMA], label="ledger database"))
        return DatabaseAlertStore(opened[-1])

    yield make
    for database in opened:
        await database.aclose()


def replicas(make: Stores, clock: Clock) -> list[tuple[Watcher, Published]]:
    made = []
    for _ in range(REPLICAS):
        published = Published()
        made.append((Watcher(make(), Thresholds(balance_below=100), publish=published, clock=clock), published))
    return made


def told(published: list[Published]) -> int:
    """How many replicas published a change to the alerts."""
    return sum(any(ALERTS_URI in uris for _, uris in p.events) for p in published)


async def test_replicas_that_see_one_low_balance_together_keep_one_alert_and_one_of_them_publishes_it(
    replica_store: Stores,
) -> None:
    clock = Clock(T0)
    watchers = replicas(replica_store, clock)
    async with anyio.create_task_group() as tg:
        for watcher, _ in watchers:
            tg.start_soon(watcher.ledger(InMemoryLedger()).record_balance, ACCOUNT, balance(50), T0)
    (alert,) = await watchers[0][0].store.recent(ACCOUNT)
    assert alert.rule == "balance_below"
    assert told([p for _, p in watchers]) == 1
    for watcher, _ in watchers:  # the ones refused read the kept alert back: the same id everywhere
        assert [a.id for a in await watcher.active(ACCOUNT)] == [alert.id]

    clock.now += timedelta(minutes=1)
    for _, published in watchers:
        published.events.clear()
    async with anyio.create_task_group() as tg:
        for watcher, _ in watchers:
            tg.start_soon(watcher.ledger(InMemoryLedger()).record_balance, ACCOUNT, balance(500), clock.now)
    (cleared,) = await watchers[0][0].store.recent(ACCOUNT)
    assert (cleared.id, cleared.cleared_at) == (alert.id, clock.now)
    assert told([p for _, p in watchers]) == 1
    for watcher, _ in watchers:
        assert await watcher.active(ACCOUNT) == []


async def test_a_replica_whose_kept_alerts_are_stale_does_not_fire_the_rule_again(replica_store: Stores) -> None:
    clock = Clock(T0)
    (first, first_told), (second, second_told), _ = replicas(replica_store, clock)
    assert await second.active(ACCOUNT) == []  # read (and kept) before the first replica fires
    await first.ledger(InMemoryLedger()).record_balance(ACCOUNT, balance(50), T0)
    clock.now += timedelta(minutes=1)
    await second.ledger(InMemoryLedger()).record_balance(ACCOUNT, balance(40), clock.now)
    (alert,) = await first.store.recent(ACCOUNT)
    assert [a.id for a in await second.active(ACCOUNT)] == [alert.id]
    assert told([first_told]) == 1
    assert told([second_told]) == 0


async def test_replicas_that_both_see_one_auto_recharge_keep_one_alert_for_it(replica_store: Stores) -> None:
    clock = Clock(T0 + timedelta(hours=1))
    rows = chain([-5, 250, -5, -5, 250], kinds=["Deduction", "Purchase", "Deduction", "Deduction", "Purchase"])
    ledgers = []
    for _ in range(2):
        watcher = Watcher(replica_store(), Thresholds(), clock=clock)
        ledger = watcher.ledger(InMemoryLedger())  # each its own ledger: both see the recharge as new
        await ledger.record_usage(ACCOUNT, window(rows, 2), rows[1].timestamp)
        ledgers.append(ledger)
    async with anyio.create_task_group() as tg:
        for ledger in ledgers:
            tg.start_soon(ledger.record_usage, ACCOUNT, window(rows, 5), rows[4].timestamp)
    (alert,) = await watcher.store.recent(ACCOUNT)
    assert (alert.rule, alert.value) == ("auto_recharge", 250)


async def test_the_in_process_store_keeps_one_active_alert_per_rule_and_clears_it_once() -> None:
    clock = Clock(T0)
    store = InMemoryAlertStore()
    watchers = [Watcher(store, Thresholds(balance_below=100), clock=clock) for _ in range(2)]
    for watcher in watchers:
        await watcher.ledger(InMemoryLedger()).record_balance(ACCOUNT, balance(50), T0)
    (alert,) = await store.recent(ACCOUNT)
    assert await store.fire(alert) is False
    assert await store.clear(replace(alert, cleared_at=T0)) is True
    assert await store.clear(replace(alert, cleared_at=T0)) is False
