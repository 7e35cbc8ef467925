"""The alert rules as the watcher judges them on what the ledger keeps: in memory, and in the ledger's database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dessert_mcp.alerts import (
    ALERTS_URI,
    BALANCE_URI,
    USAGE_URI,
    Alert,
    AlertStore,
    InMemoryAlertStore,
    Thresholds,
    Watcher,
)
from dessert_mcp.alerts.database import ALERTS_SCHEMA, DatabaseAlertStore
from dessert_mcp.alerts.rules import Reading, Rule, decide
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.models import Balance
from dessert_mcp.storage import Database
from tests.support.ledger import T0, chain, tx, window

ACCOUNT = "acct:one"


def balance(credits: int) -> Balance:
    return Balance.model_validate(
        {
            "credits_balance": credits,
            "credits_balance_usd_equivalent": credits / 10,
            "credits_lifetime_purchased": 1000,
            "auto_recharge_enabled": True,
            "auto_recharge_threshold": 20,
            "auto_recharge_amount_usd": 25.0,
            "pricing": {"credit_usd": 0.1, "full_ad_credits": 15, "static_ad_credits": 5},
        }
    )


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AlertStore]:
    if request.param == "memory":
        yield InMemoryAlertStore()
        return
    database = Database(f"sqlite:///{tmp_path / 'ledger.db'}", schemas=[LEDGER_SCHEMA, ALERTS_SCHEMA])
    yield DatabaseAlertStore(database)
    await database.aclose()


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[str]]] = []

    async def __call__(self, account: str, uris: Sequence[str]) -> None:
        self.events.append((account, list(uris)))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_balance_hovering_at_its_threshold_fires_once_and_clears_only_beyond_the_hysteresis_band(
    store: AlertStore,
) -> None:
    clock = Clock(T0)
    watcher = Watcher(store, Thresholds(balance_below=100), clock=clock)
    ledger = watcher.ledger(InMemoryLedger())
    for credits in (150, 99, 101, 99, 100, 98, 105, 99):  # hovering: one alert, never cleared
        clock.now += timedelta(minutes=1)
        await ledger.record_balance(ACCOUNT, balance(credits), clock.now)
    (alert,) = await store.recent(ACCOUNT)
    assert (alert.rule, alert.value, alert.threshold, alert.cleared_at) == ("balance_below", 99, 100, None)
    assert [a.id for a in await watcher.active(ACCOUNT)] == [alert.id]

    clock.now += timedelta(minutes=1)
    await ledger.record_balance(ACCOUNT, balance(110), clock.now)  # 10 % above the threshold: cleared
    (cleared,) = await store.recent(ACCOUNT)
    assert cleared.id == alert.id
    assert cleared.cleared_at == clock.now
    assert await watcher.active(ACCOUNT) == []

    clock.now += timedelta(minutes=1)
    await ledger.record_balance(ACCOUNT, balance(90), clock.now)  # a new crossing: a new alert
    assert [a.cleared_at is None for a in await store.recent(ACCOUNT)] == [True, False]


async def test_an_auto_recharge_that_arrives_after_the_first_read_fires_an_alert_active_for_a_day(
    store: AlertStore,
) -> None:
    clock = Clock(T0 + timedelta(hours=1))
    watcher = Watcher(store, Thresholds(), clock=clock)
    ledger = watcher.ledger(InMemoryLedger())
    rows = chain([-5, 250, -5, -5, 250], kinds=["Deduction", "Purchase", "Deduction", "Deduction", "Purchase"])
    await ledger.record_usage(ACCOUNT, window(rows, 2), rows[1].timestamp)  # the account's past: no alert for it
    assert await store.recent(ACCOUNT) == []
    await ledger.record_usage(ACCOUNT, window(rows, 5), rows[4].timestamp)
    (alert,) = await watcher.active(ACCOUNT)
    assert (alert.rule, alert.value) == ("auto_recharge", 250)
    assert alert.summary().startswith("auto_recharge: +250 credits at ")
    clock.now += timedelta(days=1, seconds=1)
    assert await watcher.active(ACCOUNT) == []
    assert len(await watcher.recent(ACCOUNT)) == 1


async def test_a_purchase_the_api_does_not_mark_as_auto_recharge_fires_nothing(store: AlertStore) -> None:
    watcher = Watcher(store, Thresholds(), clock=lambda: T0)
    ledger = watcher.ledger(InMemoryLedger())
    first = [tx(-5, 995, T0)]
    bought = [tx(500, 1495, T0 + timedelta(minutes=1), kind="Purchase", description="Credit pack"), *first]
    await ledger.record_usage(ACCOUNT, first, first[0].timestamp)
    await ledger.record_usage(ACCOUNT, bought, bought[0].timestamp)
    assert await store.recent(ACCOUNT) == []


async def test_a_gap_in_the_ledger_fires_an_alert(store: AlertStore) -> None:
    watcher = Watcher(store, Thresholds(), clock=lambda: T0)
    ledger = watcher.ledger(InMemoryLedger())
    rows = chain([-1] * 120)
    await ledger.record_usage(ACCOUNT, window(rows, 50), rows[49].timestamp)
    await ledger.record_usage(ACCOUNT, window(rows, 120), rows[119].timestamp)  # 70 rows later: the windows do not meet
    (alert,) = await watcher.active(ACCOUNT)
    assert alert.rule == "ledger_gap"


async def test_a_days_spend_above_k_times_the_trailing_median_and_a_short_runway_fire(store: AlertStore) -> None:
    # Eight days of 10 credits a day, then a day of 100: a spike (3 x median 10 = 30), and the balance left (880)
    # lasts under 100 days at the forecast's rate.
    deltas = [-5] * 16 + [-10] * 10
    starts = [T0 + timedelta(days=i // 2, hours=i % 2) for i in range(16)]
    starts += [T0 + timedelta(days=8, minutes=i) for i in range(10)]
    rows = [tx(d, 1000 + sum(deltas[: i + 1]), at) for i, (d, at) in enumerate(zip(deltas, starts, strict=True))]
    clock = Clock(T0 + timedelta(days=8, hours=12))
    watcher = Watcher(store, Thresholds(runway_days=100, spike_factor=3), clock=clock)
    ledger = watcher.ledger(InMemoryLedger())
    await ledger.record_usage(ACCOUNT, window(rows, 16), rows[15].timestamp)
    await ledger.record_usage(ACCOUNT, window(rows, 26), rows[25].timestamp)
    alerts = {a.rule: a for a in await watcher.active(ACCOUNT)}
    assert set(alerts) == {"spend_spike", "runway_below"}
    assert alerts["spend_spike"].threshold == 30
    assert alerts["spend_spike"].value > 30
    assert alerts["runway_below"].threshold == 100
    assert alerts["runway_below"].value < 100


async def test_each_change_is_published_once_for_the_resources_it_changed(store: AlertStore) -> None:
    published = Published()
    watcher = Watcher(store, Thresholds(balance_below=100), publish=published, clock=lambda: T0)
    ledger = watcher.ledger(InMemoryLedger())
    rows = chain([-5, -5, -900])
    await ledger.record_usage(ACCOUNT, window(rows, 2), rows[1].timestamp)
    await ledger.record_usage(ACCOUNT, window(rows, 2), rows[1].timestamp)  # nothing new: nothing published
    await ledger.record_balance(ACCOUNT, balance(990), T0)  # the balance the feed already showed: nothing either
    await ledger.record_usage(ACCOUNT, window(rows, 3), rows[2].timestamp)  # 90 credits left: an alert
    assert published.events == [
        (ACCOUNT, [BALANCE_URI, USAGE_URI]),
        (ACCOUNT, [BALANCE_URI, USAGE_URI, ALERTS_URI]),
    ]


class FailingStore(InMemoryAlertStore):
    """Alerts that cannot be kept: the database is gone."""

    async def thresholds(self, account: str) -> Thresholds | None:
        raise OSError("the database is gone")


async def test_a_failing_alert_store_still_lets_the_balance_and_usage_changes_be_published() -> None:
    published = Published()
    watcher = Watcher(FailingStore(), Thresholds(balance_below=100), publish=published, clock=lambda: T0)
    ledger = watcher.ledger(InMemoryLedger())
    rows = chain([-5, -5, -900])
    await ledger.record_usage(ACCOUNT, window(rows, 2), rows[1].timestamp)
    await ledger.record_usage(ACCOUNT, window(rows, 3), rows[2].timestamp)  # 90 credits left: no alert can be kept
    assert published.events == [(ACCOUNT, [BALANCE_URI, USAGE_URI])] * 2
    assert await watcher.active(ACCOUNT) == []


class RechargeNotKept(InMemoryAlertStore):
    """A store that clears alerts but fails to keep an auto-recharge alert (the database went away in between)."""

    async def fire(self, alert: Alert) -> None:
        if alert.rule == "auto_recharge":
            raise OSError("the database is gone")
        await super().fire(alert)


async def test_alerts_kept_only_in_part_are_read_from_the_store_again_not_from_a_stale_memory() -> None:
    store = RechargeNotKept()
    watcher = Watcher(store, Thresholds(balance_below=100), clock=lambda: T0)
    ledger = watcher.ledger(InMemoryLedger())
    rows = chain([-5, -910, 500], kinds=["Deduction", "Deduction", "Purchase"])
    await ledger.record_usage(ACCOUNT, window(rows, 1), rows[0].timestamp)
    await ledger.record_usage(ACCOUNT, window(rows, 2), rows[1].timestamp)  # 85 left: balance_below fires
    assert [a.rule for a in await watcher.active(ACCOUNT)] == ["balance_below"]
    # An auto-recharge to 585: balance_below is cleared in the store, then the recharge alert fails to be kept.
    await ledger.record_usage(ACCOUNT, window(rows, 3), rows[2].timestamp)
    assert await watcher.active(ACCOUNT) == []


@pytest.mark.parametrize(
    ("thresholds", "reading", "crossed", "hovering", "back"),
    [
        pytest.param(
            Thresholds(runway_days=3),
            lambda days: Reading(runway_days=days),
            2.9,
            3.2,  # above the threshold, inside the 10 % band
            3.31,
            id="runway_below",
        ),
        pytest.param(
            Thresholds(spike_factor=3),
            lambda spend: Reading(today_spend=spend, trailing_median=10.0),
            31,
            28,  # under 3 x the median, inside the 10 % band
            27,
            id="spend_spike",
        ),
    ],
)
def test_a_level_rule_fires_once_while_its_value_hovers_and_clears_only_beyond_the_hysteresis_band(
    thresholds: Thresholds, reading: Callable[[float], Reading], crossed: float, hovering: float, back: float
) -> None:
    active: dict[Rule, Alert] = {}
    fired, cleared = decide(ACCOUNT, reading(crossed), thresholds, active, T0)
    (alert,) = fired
    assert cleared == []
    active[alert.rule] = alert
    for value in (hovering, crossed, hovering):
        assert decide(ACCOUNT, reading(value), thresholds, active, T0) == ([], [])
    fired, cleared = decide(ACCOUNT, reading(back), thresholds, active, T0 + timedelta(hours=1))
    assert fired == []
    assert [(a.id, a.cleared_at) for a in cleared] == [(alert.id, T0 + timedelta(hours=1))]


def spending(median: float) -> Callable[[float], Reading]:
    """Readings of a day's spend against a trailing median."""
    return lambda spend: Reading(today_spend=int(spend), trailing_median=median)


@pytest.mark.parametrize(
    ("thresholds", "reading", "at", "past", "inside", "edge"),
    [
        pytest.param(Thresholds(balance_below=100), lambda v: Reading(balance=int(v)), 100, 99, 109, 110, id="balance"),
        pytest.param(Thresholds(balance_below=5), lambda v: Reading(balance=int(v)), 5, 4, 5, 6, id="balance-small"),
        pytest.param(Thresholds(runway_days=3), lambda v: Reading(runway_days=v), 3, 2.99, 3.29, 3.3, id="runway-3"),
        pytest.param(Thresholds(runway_days=7), lambda v: Reading(runway_days=v), 7, 6.99, 7.69, 7.7, id="runway-7"),
        pytest.param(
            Thresholds(runway_days=1.5), lambda v: Reading(runway_days=v), 1.5, 1.49, 1.64, 1.65, id="runway-1.5"
        ),
        pytest.param(Thresholds(spike_factor=3), spending(10.0), 30, 31, 28, 27, id="spike"),
        # In binary floating point 1.4 x 45 is 62.99999999999999 (63 would be above it), and 4.6 x 50 is
        # 229.99999999999997 (207, exactly 90 % of 230, would not clear).
        pytest.param(Thresholds(spike_factor=1.4), spending(45.0), 63, 64, 57, 56, id="spike-1.4x45"),
        pytest.param(Thresholds(spike_factor=4.6), spending(50.0), 230, 231, 208, 207, id="spike-4.6x50"),
    ],
)
def test_a_level_rule_fires_past_its_threshold_not_at_it_and_clears_exactly_at_the_edge_of_its_band(
    thresholds: Thresholds, reading: Callable[[float], Reading], at: float, past: float, inside: float, edge: float
) -> None:
    assert decide(ACCOUNT, reading(at), thresholds, {}, T0) == ([], [])  # at the threshold: not crossed
    (alert,), _ = decide(ACCOUNT, reading(past), thresholds, {}, T0)
    active: dict[Rule, Alert] = {alert.rule: alert}
    assert decide(ACCOUNT, reading(inside), thresholds, active, T0) == ([], [])
    fired, cleared = decide(ACCOUNT, reading(edge), thresholds, active, T0 + timedelta(hours=1))
    assert (fired, [a.id for a in cleared]) == ([], [alert.id])
