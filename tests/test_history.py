"""Answers beyond the API's last 50 transactions, through a real MCP client: ranges and pages from the kept history,
get_spend, the forecast's range, the ledger off, and a ledger that fails or stalls."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from dessert_mcp.config import Settings
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.models import Transaction
from dessert_mcp.observe.metrics import Metrics
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server
from tests.support.api import CANARY_KEY, DOCS_BALANCE, FAKE_BASE_URL, FakeDessertAPI
from tests.support.ledger import T0, chain, iso, read_at, window


class MovingFeed:
    """GET /v1/usage of a live account: the last 50 of `rows[:end]`, newest first; the test moves `end`, and with it
    the account's clock (`now`: after the newest row, before the next)."""

    def __init__(self, rows: Sequence[Transaction]) -> None:
        self.rows = rows
        self.end = min(len(rows), 50)

    def now(self) -> datetime:
        return read_at(self.rows, self.end)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        answer = [tx.model_dump(mode="json") for tx in window(self.rows, self.end)]
        return httpx2.Response(200, json={"recent_transactions": answer})


def _settings(**env: str) -> Settings:
    return Settings.from_env({"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": FAKE_BASE_URL, **env})


def _api(feed: MovingFeed) -> FakeDessertAPI:
    return FakeDessertAPI({"/v1/balance": DOCS_BALANCE, "/v1/usage": feed})


def _server(feed: MovingFeed, api: FakeDessertAPI | None = None, **kwargs: Any) -> Any:
    """dessert-mcp reading `feed`, on its clock."""
    settings = _settings(**kwargs.pop("env", {}))
    transport = (api or _api(feed)).transport()
    kwargs.setdefault("ledger", InMemoryLedger())
    return build_server(settings, service=DessertService(settings, transport=transport, clock=feed.now, **kwargs))


async def _see(client: Client, feed: MovingFeed, ends: Sequence[int]) -> None:
    """The account as the server sees it over time: one plain usage call per position of the window."""
    for end in ends:
        feed.end = end
        result = await client.call_tool("dessert_get_usage", {})
        assert result.is_error is False


async def _usage(client: Client, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool("dessert_get_usage", arguments)
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return result.structured_content


ROWS = chain([-3, -5, 40, -2] * 30)  # 120 transactions, one a minute, balances that add up


async def test_a_range_beyond_the_apis_window_is_answered_from_kept_history_fifty_at_a_time() -> None:
    feed = MovingFeed(ROWS)
    api = _api(feed)
    async with Client(_server(feed, api)) as client:
        await _see(client, feed, [50, 75, 100, 120])
        since = iso(ROWS[1].timestamp - timedelta(seconds=30))
        pages, cursor = [], None
        while True:
            page = await _usage(client, since=since, **({"cursor": cursor} if cursor else {}))
            pages.append(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert [len(p["recent_transactions"]) for p in pages] == [50, 50, 19]
    returned = [tx for p in pages for tx in p["recent_transactions"]]
    assert returned == [tx.model_dump(mode="json") for tx in reversed(ROWS[1:])]
    assert all(p["history_complete"] is True and p["seams"] == [] for p in pages)
    assert len(api.requests) == 4 + len(pages)  # one upstream request per call, nothing more for the ledger


async def test_types_and_limit_page_through_the_kept_history() -> None:
    feed = MovingFeed(ROWS)
    async with Client(_server(feed)) as client:
        await _see(client, feed, [50, 90, 120])
        since = iso(T0 + timedelta(seconds=30))
        first = await _usage(client, since=since, types=["Purchase"], limit=20)
        second = await _usage(client, since=since, types=["Purchase"], limit=20, cursor=first["next_cursor"])
    purchases = [tx.model_dump(mode="json") for tx in reversed(ROWS) if tx.type == "Purchase"]
    assert first["recent_transactions"] == purchases[:20]
    assert second["recent_transactions"] == purchases[20:]
    assert second["next_cursor"] is None


async def test_a_range_until_a_time_before_the_window_is_answered_from_kept_history() -> None:
    feed = MovingFeed(ROWS)
    async with Client(_server(feed)) as client:
        await _see(client, feed, [50, 100, 120])
        page = await _usage(client, since=iso(ROWS[10].timestamp), until=iso(ROWS[20].timestamp))
    assert page["recent_transactions"] == [tx.model_dump(mode="json") for tx in reversed(ROWS[10:20])]
    assert page["history_complete"] is True


async def test_answers_that_share_no_row_make_history_incomplete_and_say_where() -> None:
    feed = MovingFeed(ROWS)
    async with Client(_server(feed)) as client:
        await _see(client, feed, [50, 100, 120])  # rows 0-49 and 50-99 chain by balance but share no row
        adjacent = await _usage(client, since=iso(ROWS[30].timestamp))
        feed.end = 50
        await _see(client, feed, [])
    assert adjacent["history_complete"] is False
    assert {"kind": "unverified", "after": ROWS[49].at, "before": ROWS[50].at} in [
        {k: s[k] for k in ("kind", "after", "before")} for s in adjacent["seams"]
    ]
    feed = MovingFeed(ROWS)
    async with Client(_server(feed)) as client:
        await _see(client, feed, [50, 120])  # rows 0-49 and 70-119: twenty transactions nobody saw
        apart = await _usage(client, since=iso(ROWS[30].timestamp))
    assert apart["history_complete"] is False
    assert [s["kind"] for s in apart["seams"]] == ["gap"]
    assert (apart["seams"][0]["after"], apart["seams"][0]["before"]) == (ROWS[49].at, ROWS[70].at)


async def test_a_cursor_the_server_did_not_make_is_an_invalid_argument() -> None:
    feed = MovingFeed(ROWS)
    async with Client(_server(feed)) as client:
        result = await client.call_tool("dessert_get_usage", {"since": iso(T0), "cursor": "not-a-cursor"})
    assert result.is_error is True
    assert '"code": "invalid_argument"' in result.content[0].text  # type: ignore[union-attr]


SPEND_ROWS = chain(
    [-10, -30, 5, -10, 200, -30, -1],
    start=datetime(2026, 5, 4, 10, tzinfo=UTC),  # a Monday
    step=timedelta(days=1),
    kinds=["Deduction", "Deduction", "Refund", "Deduction", "Purchase", "Deduction", "Deduction"],
    descriptions=[
        "API ad generation (count=2, format=static)",
        "API ad generation (count=1, format=full)",
        "Refund (format=full)",
        "API ad generation (count=2, format=static)",
        "Auto-recharge",
        "API ad generation (count=1, format=full)",
        "Manual adjustment",
    ],
)


async def test_get_spend_totals_per_period_by_type_and_ad_format_and_counts_unparsed_apart() -> None:
    feed = MovingFeed(SPEND_ROWS)
    async with Client(_server(feed)) as client:
        result = await client.call_tool("dessert_get_spend", {"period": "week", "since": "2026-05-04T00:00:00Z"})
        days = await client.call_tool("dessert.get_spend", {"since": "2026-05-04T00:00:00Z"})
    assert result.is_error is False
    assert days.is_error is False
    spend = result.structured_content
    assert spend is not None
    assert spend["history_complete"] is True  # fewer than 50 transactions: the API's answer holds them all
    total = spend["total"]
    assert total["by_type"]["Deduction"] == {"transactions": 5, "credits": -81}
    assert total["by_type"]["Refund"] == {"transactions": 1, "credits": 5}
    assert total["by_type"]["Purchase"] == {"transactions": 1, "credits": 200}
    assert total["by_format"] == {
        "full": {"transactions": 3, "credits": -55},
        "static": {"transactions": 2, "credits": -20},
        "unparsed": {"transactions": 1, "credits": -1},
    }
    assert [p["start"][:10] for p in spend["periods"]] == ["2026-05-04"]  # up to now: the Sunday after the last
    assert days.structured_content is not None
    assert [p["by_type"]["Deduction"]["credits"] for p in days.structured_content["periods"]][:7] == [
        -10,
        -30,
        0,
        -10,
        0,
        -30,
        -1,
    ]


async def test_the_forecast_gives_a_range_from_the_spread_of_daily_spend_in_kept_history() -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    daily = [-20, -60, -30, -90, -40, -50, -70, -10]  # one deduction a day at noon, over eight days
    rows = chain([2000, *daily], start=today - timedelta(days=9, hours=12), step=timedelta(days=1))
    feed = MovingFeed(rows)
    settings = _settings()
    service = DessertService(settings, transport=_api(feed).transport(), ledger=InMemoryLedger(), clock=feed.now)
    async with Client(build_server(settings, service=service)) as client:
        await _see(client, feed, [len(rows)])
        assert service.recorder is not None
        await service.recorder.settled()  # the answer is kept
        forecast = (await _usage(client))["summary"]["forecast"]
    assert forecast["history_days"] >= 2
    assert forecast["days_until_empty_low"] <= forecast["days_until_empty"] <= forecast["days_until_empty_high"]
    assert forecast["latest_balance"] == rows[-1].balance_after


async def test_the_forecast_appears_once_history_is_kept_even_after_an_answer_read_without_it() -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = chain([2000, -20, -60, -30, -90, -40], start=today - timedelta(days=6, hours=12), step=timedelta(days=1))
    feed = MovingFeed(rows)
    ledger = StalledLedger()
    settings = _settings()
    service = DessertService(settings, transport=_api(feed).transport(), ledger=ledger, clock=feed.now)
    async with Client(build_server(settings, service=service)) as client:
        before = (await _usage(client))["summary"]["forecast"]  # its own answer is not kept yet: no daily spend
        ledger.release.set()
        assert service.recorder is not None
        await service.recorder.settled()
        after = (await _usage(client))["summary"]["forecast"]
    assert before.get("history_days") is None
    assert after["history_days"] >= 2


class CountedLedger(InMemoryLedger):
    """A ledger that counts its daily spend reads."""

    def __init__(self) -> None:
        super().__init__()
        self.daily_reads = 0

    async def daily_net_spend(self, *args: Any, **kwargs: Any) -> Any:
        self.daily_reads += 1
        return await super().daily_net_spend(*args, **kwargs)


async def test_usage_calls_without_enough_history_to_forecast_from_read_the_daily_spend_once() -> None:
    feed = MovingFeed(ROWS)  # two hours of rows: no whole day to forecast from
    ledger = CountedLedger()
    settings = _settings()
    service = DessertService(settings, transport=_api(feed).transport(), ledger=ledger, clock=feed.now)
    async with Client(build_server(settings, service=service)) as client:
        await _see(client, feed, [120])
        assert service.recorder is not None
        await service.recorder.settled()
        read = ledger.daily_reads
        for _ in range(5):  # the same answer each time: nothing new kept
            await _see(client, feed, [120])
            await service.recorder.settled()
    assert ledger.daily_reads - read <= 1


async def test_with_the_ledger_off_calls_answer_from_the_api_alone_as_before() -> None:
    feed = MovingFeed(ROWS)
    feed.end = 120
    api = _api(feed)
    server = build_server(_settings(DESSERT_LEDGER="off"), transport=api.transport())
    async with Client(server) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        old = await _usage(client, since=iso(T0))
        ranged = await client.call_tool("dessert_get_usage", {"until": iso(ROWS[100].timestamp)})
        spend = await client.call_tool("dessert_get_spend", {})
    assert names == ["dessert_get_balance", "dessert_get_usage"]
    assert old["recent_transactions"] == [tx.model_dump(mode="json") for tx in reversed(ROWS[70:])]
    assert old["history_complete"] is False
    assert "unknown argument 'until'" in ranged.content[0].text  # type: ignore[union-attr]
    assert spend.is_error is True
    assert len(api.requests) == 1  # the refused calls asked nothing


class BrokenLedger(InMemoryLedger):
    """A ledger whose database went read-only: every write fails, and reads do too when `reads` is set."""

    def __init__(self, *, reads: bool = False) -> None:
        super().__init__()
        self.reads = reads

    async def record_usage(self, *args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    async def record_balance(self, *args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    async def history(self, *args: Any, **kwargs: Any) -> Any:
        if self.reads:
            raise sqlite3.OperationalError("unable to open database file")
        return await super().history(*args, **kwargs)

    async def daily_net_spend(self, *args: Any, **kwargs: Any) -> Any:
        if self.reads:
            raise sqlite3.OperationalError("unable to open database file")
        return await super().daily_net_spend(*args, **kwargs)

    async def spend(self, *args: Any, **kwargs: Any) -> Any:
        if self.reads:
            raise sqlite3.OperationalError("unable to open database file")
        return await super().spend(*args, **kwargs)


def _failures(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value("dessert_mcp_ledger_failures_total", {"operation": operation})
    return value or 0.0


@pytest.mark.parametrize("reads", [False, True], ids=["read-only", "gone"])
async def test_a_failing_ledger_leaves_every_call_answering_warns_once_and_is_counted(
    caplog: pytest.LogCaptureFixture, reads: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="dessert_mcp")
    feed = MovingFeed(ROWS)
    api = _api(feed)
    metrics = Metrics()
    settings = _settings()
    service = DessertService(
        settings, transport=api.transport(), observer=metrics, ledger=BrokenLedger(reads=reads), clock=feed.now
    )
    async with Client(build_server(settings, service=service)) as client:
        for end in (50, 80, 120):
            feed.end = end
            assert (await client.call_tool("dessert_get_balance", {})).is_error is False
            plain = await _usage(client)
            ranged = await _usage(client, since=iso(T0))
            spend = await client.call_tool("dessert_get_spend", {})
            assert spend.is_error is False
        assert service.recorder is not None
        await service.recorder.settled()
    assert plain["recent_transactions"] == [tx.model_dump(mode="json") for tx in window(ROWS, 120)]
    assert ranged["history_complete"] is False
    assert ranged["recent_transactions"] == plain["recent_transactions"]
    warnings = [r for r in caplog.records if "ledger failed" in r.getMessage()]
    # Once for writes (and at most once for a read that came before the first write failed): not once per call. While
    # writes fail the ledger is not read at all: it lacks what the calls just saw.
    assert len([w for w in warnings if "(record_" in w.getMessage()]) == 1
    assert len(warnings) <= (2 if reads else 1)
    # Every write tried: per round the plain call's answer and the newest of its repeats (the ranged and spend calls'
    # equal answers), and the ranged call's own when its read, made before the first failure, wrote it early.
    assert 6 <= _failures(metrics, "record_usage") <= 7
    assert _failures(metrics, "record_balance") == 2  # the balance never changes: the first and the newest repeat
    assert _failures(metrics, "read") <= (1 if reads else 0)
    assert len(api.requests) == 12  # one upstream request per call


class StalledLedger(InMemoryLedger):
    """A ledger whose writes hang (a database locked by another process) until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.writes_started = 0

    async def record_usage(self, *args: Any, **kwargs: Any) -> Any:
        self.writes_started += 1
        await self.release.wait()
        return await super().record_usage(*args, **kwargs)


async def test_a_call_never_waits_for_a_ledger_write() -> None:
    feed = MovingFeed(ROWS)
    ledger = StalledLedger()
    settings = _settings()
    service = DessertService(settings, transport=_api(feed).transport(), ledger=ledger, clock=feed.now)
    async with Client(build_server(settings, service=service)) as client:
        for end in (50, 60, 70):
            feed.end = end
            assert (await _usage(client))["recent_transactions"] == [
                tx.model_dump(mode="json") for tx in window(ROWS, end)
            ]
        assert ledger.writes_started == 1  # the first write still hangs; the calls answered all the same
        ledger.release.set()
        assert service.recorder is not None
        await service.recorder.settled()
        since = iso(T0 + timedelta(seconds=30))
        page = await _usage(client, since=since)
        rest = await _usage(client, since=since, cursor=page["next_cursor"])
    assert len(page["recent_transactions"]) + len(rest["recent_transactions"]) == 69  # every answer was kept


class PolledFeed(MovingFeed):
    """A feed whose answers are filed at their newest row's time, as the poller files them."""

    def now(self) -> datetime:
        return self.rows[self.end - 1].timestamp


@pytest.mark.parametrize("feed_type", [MovingFeed, PolledFeed], ids=["read after", "read at the newest row"])
async def test_get_usage_and_get_spend_agree_on_every_range_from_the_oldest_row_kept(
    feed_type: type[MovingFeed],
) -> None:
    feed = feed_type(ROWS)
    async with Client(_server(feed)) as client:
        await _see(client, feed, [50, 80])
        oldest, newest = ROWS[0].timestamp, ROWS[79].timestamp
        for since in (oldest, oldest + timedelta(milliseconds=1), ROWS[40].timestamp):
            for until in (None, newest, newest + timedelta(milliseconds=1), newest + timedelta(days=1)):
                arguments = {"since": iso(since)} | ({"until": iso(until)} if until else {})
                usage = await _usage(client, **arguments)
                result = await client.call_tool("dessert_get_spend", arguments)
                spend = result.structured_content
                assert spend is not None
                said = (usage["history_complete"], usage["seams"])
                assert (spend["history_complete"], spend["seams"]) == said, arguments
                assert usage["history_complete"] == (since != oldest), arguments
                counted = sum(t["transactions"] for t in spend["total"]["by_type"].values())
                in_range = [tx for tx in ROWS[:80] if since <= tx.timestamp and (until is None or tx.timestamp < until)]
                assert counted == len(in_range), arguments
