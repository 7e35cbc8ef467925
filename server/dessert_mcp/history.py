"""The tools' answers beyond the API's last 50 transactions: usage ranges and pages, spend totals and the forecast,
from the ledger when it has the history, from the API's own answer when it does not (or is off, or fails)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import dropwhile
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict, Field

from dessert_mcp.client import DessertAPIError
from dessert_mcp.models import (
    AD_FORMATS,
    TRANSACTION_TYPES,
    USAGE_FEED_SIZE,
    AdFormat,
    Period,
    Seam,
    TransactionType,
    Usage,
    UsageArguments,
    UsageRangeArguments,
    UsageReport,
    _Schema,
    as_utc,
    window_covers,
)
from dessert_mcp.recorder import Recorder

if TYPE_CHECKING:  # the ledger loads on its first use, not with the tools' shapes
    from dessert_mcp.ledger import DailySpend, HistoryPage, Ledger, SpendBucket, SpendReport
    from dessert_mcp.ledger import Seam as LedgerSeam
    from dessert_mcp.ledger import Totals as LedgerTotals

AccountOf = Callable[["Ledger"], Awaitable[str]]

# A usage result holds at most this many transactions (`limit` asks for fewer); next_cursor pages on.
PAGE_ROWS: Final = USAGE_FEED_SIZE
# Ledger pages read to fill one result when `types` leaves most rows out; next_cursor goes on from there.
MAX_PAGES_SCANNED: Final = 20
# Days of history the forecast's rate and range come from.
FORECAST_DAYS: Final = 30
# Seconds an account's daily spend is reused for the forecast: whole past days change only when history is filled
# in (this process hears of its own writes; the bound is for other processes sharing the database), and reading
# them on every call would cost each usage call a database query.
DAILY_TTL_S: Final = 300.0
DAILY_KEPT: Final = 1024
# A spend result lists at most this many periods (the newest); the total still covers the whole range.
MAX_PERIODS: Final = 100
# What get_spend's fallback files the API's one answer under, in a ledger of its own.
_WINDOW: Final = "window"


class SpendArguments(BaseModel):
    """`dessert.get_spend`'s arguments."""

    model_config = ConfigDict(extra="forbid", strict=False)

    since: datetime | None = Field(default=None, description="From this ISO 8601 time (UTC if no offset).")
    until: datetime | None = Field(default=None, description="Before this time (default: now).")
    period: Period = Field(default="day", description="Totals per UTC day, week (from Monday) or calendar month.")


class Totals(_Schema):
    transactions: int
    credits: int = Field(description="Sum of the signed credit deltas.")


class SpendPeriod(_Schema):
    """Totals over [start, end)."""

    start: str
    end: str
    by_type: dict[TransactionType, Totals]
    by_format: dict[AdFormat, Totals] = Field(
        description="Deduction and Refund rows by the ad format their description names (format=full or "
        "format=static); unparsed: it names none."
    )
    history_complete: bool

    @classmethod
    def of(cls, bucket: SpendBucket) -> SpendPeriod:
        def totals(t: LedgerTotals) -> Totals:
            return Totals(transactions=t.transactions, credits=t.credits)

        return cls(
            start=_iso(bucket.start),
            end=_iso(bucket.end),
            by_type={k: totals(bucket.by_type[k]) for k in TRANSACTION_TYPES},
            by_format={k: totals(bucket.by_format[k]) for k in AD_FORMATS},
            history_complete=bucket.history_complete,
        )


class SpendResult(_Schema):
    """Credit totals over a range, per period (oldest first), by transaction type and by ad format."""

    period: Period
    periods: list[SpendPeriod]
    total: SpendPeriod
    history_complete: bool = Field(description="True only when every transaction in the range is counted.")
    seams: list[Seam] = Field(description="Where transactions may be missing; empty when history_complete.")
    note: str

    @classmethod
    def of(cls, report: SpendReport, source: str) -> SpendResult:
        shown = report.buckets[-MAX_PERIODS:]
        cut = f" Only the newest {MAX_PERIODS} periods are listed." if len(shown) < len(report.buckets) else ""
        return cls(
            period=report.period,
            periods=[SpendPeriod.of(b) for b in shown],
            total=SpendPeriod.of(report.total),
            history_complete=report.history_complete,
            seams=[_seam(s) for s in report.seams],
            note=source + cut,
        )


class UsageHistory:
    """Answers `usage` and `spend` calls from the API's answer and, when kept, the ledger (`recorder`)."""

    def __init__(self, recorder: Recorder | None, clock: Callable[[], datetime]) -> None:
        self._recorder = recorder
        self._clock = clock
        self._daily: dict[str, tuple[float, date, list[int]]] = {}  # account: (read at, its today, nets)

    def kept_more(self, account: str) -> None:
        """The ledger kept new rows of `account`: its next forecast reads the daily spend again."""
        self._daily.pop(account, None)

    async def usage(
        self, usage: Usage, arguments: UsageArguments, account: AccountOf, known: str | None = None
    ) -> UsageReport:
        """`known`: the account's name in the ledger when the caller knows it already (its forecast may be kept)."""
        ranged = arguments if isinstance(arguments, UsageRangeArguments) else UsageRangeArguments()
        since, until, cursor = as_utc(arguments.since), as_utc(ranged.until), ranged.cursor
        feed = sorted(usage.recent_transactions, key=lambda tx: tx.timestamp, reverse=True)
        in_window = cursor is None and (window_covers(feed, since) or (since is None and until is None))
        if self._recorder is None or in_window:
            report = UsageReport.build(usage, limit=arguments.limit, types=arguments.types, since=since, until=until)
            return await self._with_forecast(report, account, known)
        limit = arguments.limit or PAGE_ROWS

        async def read(ledger: Ledger) -> list[HistoryPage]:
            return await _pages(ledger, await account(ledger), since, until, arguments.types, limit, cursor)

        try:
            answer = await self._recorder.read(read, passes=(ValueError,))
        except ValueError as exc:
            raise DessertAPIError(
                f"Invalid arguments for dessert.get_usage: cursor: {exc}. Pass the next_cursor of a previous result "
                "with the same since and until.",
                code="invalid_argument",
            ) from None
        if answer is None:  # the ledger failed: the API's answer, as without a ledger
            if cursor is not None:
                raise DessertAPIError(
                    "The kept history is unavailable right now, so this page cannot be read; call again without "
                    "cursor for what the Dessert API holds.",
                    code="upstream_unavailable",
                    retryable=True,
                )
            return UsageReport.build(usage, limit=arguments.limit, types=arguments.types, since=since, until=until)
        pages = answer
        first, last = pages[0], pages[-1]
        returned = [row.transaction for page in pages for row in page.rows if _wanted(row.transaction.type, arguments)]
        report = UsageReport.of(
            returned,
            complete=first.history_complete,
            seams=[_seam(s) for s in first.seams],
            next_cursor=last.next_cursor,
            note=(
                f"{len(returned)} transactions from the history this server keeps of every usage answer, newest "
                f"first (at most {limit} per result; next_cursor pages on)."
            ),
        )
        return await self._with_forecast(report, account, known)

    async def spend(self, usage: Usage, arguments: SpendArguments, account: AccountOf) -> SpendResult:
        since, until = as_utc(arguments.since), as_utc(arguments.until)
        if self._recorder is not None:

            async def read(ledger: Ledger) -> SpendReport:
                return await ledger.spend(await account(ledger), since, until, period=arguments.period)

            kept = await self._recorder.read(read)
            if kept is not None:
                return SpendResult.of(kept, "Totals over the history this server keeps of every usage answer.")
        # No kept history: the API's one answer, through a ledger of its own so the totals and completeness agree.
        from dessert_mcp.ledger import InMemoryLedger

        window = InMemoryLedger()
        await window.record_usage(_WINDOW, usage.recent_transactions, self._clock())
        report = await window.spend(_WINDOW, since, until, period=arguments.period)
        return SpendResult.of(report, f"Totals over the last {USAGE_FEED_SIZE} transactions the Dessert API returns.")

    async def _with_forecast(self, report: UsageReport, account: AccountOf, known: str | None) -> UsageReport:
        """The report with the forecast over the last FORECAST_DAYS whole days of kept history, when there are some."""
        if self._recorder is None:
            return report

        async def read(ledger: Ledger) -> list[int]:
            now = self._clock()
            name = await account(ledger)
            kept = self._kept(name, now)
            if kept is not None:
                return kept
            days = await ledger.daily_net_spend(name, now - timedelta(days=FORECAST_DAYS + 1), None)
            nets = whole_day_nets(days)
            # Kept even when too short to forecast from: `kept_more` drops it when this process keeps new rows.
            self._daily.pop(name, None)
            if len(self._daily) >= DAILY_KEPT:
                self._daily.pop(next(iter(self._daily)))
            self._daily[name] = (time.monotonic(), now.date(), nets)
            return nets

        # Kept daily spend needs no trip to the ledger (most calls: it changes when new rows are kept).
        daily = self._kept(known, self._clock()) if known is not None and self._recorder.writing else None
        if daily is None:
            daily = await self._recorder.read(read, after_writes=False)
        if not daily:
            return report
        forecast = report.summary.forecast.with_daily(daily)
        return report.model_copy(update={"summary": report.summary.model_copy(update={"forecast": forecast})})

    def _kept(self, name: str, now: datetime) -> list[int] | None:
        kept = self._daily.get(name)
        if kept is not None and kept[1] == now.date() and time.monotonic() - kept[0] < DAILY_TTL_S:
            return kept[2]
        return None


def whole_day_nets(days: Sequence[DailySpend]) -> list[int]:
    """The net spend of the whole days among `days` (not the first, not today; complete ones only), from the first
    day that spent anything (not the quiet before it): what a forecast's rate comes from."""
    nets = [d.net_credits for d in days[1:-1] if d.complete]
    return list(dropwhile(lambda net: net == 0, nets))


async def _pages(
    ledger: Ledger,
    account: str,
    since: datetime | None,
    until: datetime | None,
    types: list[TransactionType] | None,
    limit: int,
    cursor: str | None,
) -> list[HistoryPage]:
    """Ledger pages until `limit` rows of `types` are in hand, the history ends, or MAX_PAGES_SCANNED were read.

    Each page asks for no more rows than are still wanted, so every row of every page read can be returned and the
    last page's next_cursor is where the next result starts."""
    pages: list[HistoryPage] = []
    wanted = limit
    for _ in range(MAX_PAGES_SCANNED):
        page = await ledger.history(account, since, until, limit=wanted, cursor=cursor)
        pages.append(page)
        wanted -= sum(1 for row in page.rows if not types or row.transaction.type in types)
        cursor = page.next_cursor
        if wanted <= 0 or cursor is None:
            break
    return pages


def _wanted(kind: TransactionType, arguments: UsageArguments) -> bool:
    return not arguments.types or kind in arguments.types


def _seam(seam: LedgerSeam) -> Seam:
    return Seam(
        kind=seam.kind,
        after=_iso(seam.after) if seam.after is not None else None,
        before=_iso(seam.before) if seam.before is not None else None,
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
