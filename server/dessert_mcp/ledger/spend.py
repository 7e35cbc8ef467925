"""Spend totals over periods, and the ad format a description names. Pure."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Final

from dessert_mcp.ledger.api import DailySpend, LedgerRow, SpendBucket, SpendReport, Totals
from dessert_mcp.ledger.coverage import Coverage
from dessert_mcp.models import AdFormat, Period, Transaction, TransactionType

# "API ad generation (count=3, format=full)": the documented description of an ad deduction.
_FORMAT: Final = re.compile(r"\bformat=(full|static)\b")
# The rows the ad formats are counted over: what ads cost, and what came back.
_AD_TYPES: Final[frozenset[TransactionType]] = frozenset({"Deduction", "Refund"})
# The smallest step of the ledger's clock (it stores microseconds): [since, as_of + this) holds the rows at as_of.
_JUST_AFTER: Final = timedelta(microseconds=1)


def ad_format(description: str) -> AdFormat:
    match = _FORMAT.search(description)
    return "unparsed" if match is None else "full" if match.group(1) == "full" else "static"


def period_start(at: datetime, period: Period) -> datetime:
    """The start (UTC) of the period `at` falls in."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def next_period(start: datetime, period: Period) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(weeks=1)
    return (start + timedelta(days=32)).replace(day=1)


def _zero() -> tuple[dict[TransactionType, Totals], dict[AdFormat, Totals]]:
    base = SpendBucket(datetime.min, datetime.min)
    return dict(base.by_type), dict(base.by_format)


def build_spend(
    rows: Iterable[LedgerRow], coverage: Coverage, since: datetime | None, until: datetime | None, period: Period
) -> SpendReport:
    """Totals of `rows` (those in [since, until), any order) per period; `since`/`until` None: the oldest row's period
    start and the last observation."""
    kept = list(rows)
    end = coverage.end(until)
    if coverage.as_of is not None and (until is None or until > coverage.as_of):
        # Up to the last observation, and through its instant: the poller files an answer at its newest row's time,
        # and that row is counted (as get_usage lists it); nothing later was seen.
        end = coverage.as_of + _JUST_AFTER
    start = since
    if start is None:
        first = min((r.transaction.timestamp for r in kept), default=None)
        start = first if first is not None else end
    if start is None or end is None:
        total = SpendBucket(start or datetime.min.replace(tzinfo=UTC), end or datetime.min.replace(tzinfo=UTC))
        return SpendReport(period, (), total, False, coverage.seams_over(since, until), coverage.as_of)
    edges = [period_start(start, period)]
    while edges[-1] < end:
        edges.append(next_period(edges[-1], period))
    totals = [_zero() for _ in edges[1:]]
    all_types, all_formats = _zero()
    for row in kept:
        tx = row.transaction
        if not start <= tx.timestamp < end:
            continue
        i = bisect.bisect_right(edges, tx.timestamp) - 1
        _count(tx, totals[i][0], totals[i][1])
        _count(tx, all_types, all_formats)
    buckets = []
    for (by_type, by_format), lo, hi in zip(totals, edges, edges[1:], strict=False):
        lo, hi = max(lo, start), min(hi, end)
        buckets.append(SpendBucket(lo, hi, by_type, by_format, coverage.complete(lo, hi)))
    complete = coverage.complete(since, until)
    total = SpendBucket(start, end, all_types, all_formats, complete)
    return SpendReport(period, tuple(buckets), total, complete, coverage.seams_over(since, until), coverage.as_of)


def _count(tx: Transaction, by_type: dict[TransactionType, Totals], by_format: dict[AdFormat, Totals]) -> None:
    by_type[tx.type] = by_type[tx.type].add(tx.credits_delta)
    if tx.type in _AD_TYPES:
        fmt = ad_format(tx.description)
        by_format[fmt] = by_format[fmt].add(tx.credits_delta)


def daily_net(
    rows: Iterable[LedgerRow], coverage: Coverage, since: datetime | None, until: datetime | None
) -> tuple[DailySpend, ...]:
    """Net credits spent per UTC day (deductions minus refunds), oldest first, each day with its completeness."""
    report = build_spend((r for r in rows if r.transaction.type in _AD_TYPES), coverage, since, until, "day")
    return tuple(
        DailySpend(
            day=_day(b.start),
            net_credits=-(b.by_type["Deduction"].credits + b.by_type["Refund"].credits),
            complete=b.history_complete,
        )
        for b in report.buckets
    )


def _day(at: datetime) -> date:
    return at.astimezone(UTC).date()
