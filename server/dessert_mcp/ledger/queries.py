"""What both backends do the same way around the merge: argument checks, which stretches a window meets, pages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from dessert_mcp.ledger.api import MAX_PAGE_ROWS, LedgerRow
from dessert_mcp.ledger.coverage import StretchSummary, decode_cursor, encode_cursor
from dessert_mcp.models import Transaction


def check_aware(*times: datetime | None) -> None:
    if any(t is not None and t.tzinfo is None for t in times):
        raise ValueError("the ledger takes aware datetimes (with a UTC offset)")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_ROWS:
        raise ValueError(f"limit must be 1..{MAX_PAGE_ROWS}")


def in_range(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


def relevant(stretches: Sequence[StretchSummary], lo: datetime, hi: datetime) -> list[int]:
    """Ids of the stretches a window spanning [lo, hi] is placed against: those meeting it, and the nearest one
    wholly before and wholly after it."""
    meeting = [s.id for s in stretches if s.first.timestamp <= hi and s.last.timestamp >= lo]
    before = [s for s in stretches if s.last.timestamp < lo]
    after = [s for s in stretches if s.first.timestamp > hi]
    if before:
        meeting.append(max(before, key=lambda s: (s.last.timestamp, s.id)).id)
    if after:
        meeting.append(min(after, key=lambda s: (s.first.timestamp, s.id)).id)
    return meeting


def time_span(transactions: Sequence[Transaction]) -> tuple[datetime, datetime]:
    times = [tx.timestamp for tx in transactions]
    return min(times), max(times)


def page_of(
    rows: Sequence[LedgerRow], since: datetime | None, until: datetime | None, limit: int, cursor: str | None
) -> tuple[list[LedgerRow], str | None]:
    """One page of `rows` (newest first, all of the range) from `cursor` on, and the next page's cursor."""
    skip_at, skip = decode_cursor(cursor, since, until) if cursor is not None else (None, 0)
    if skip_at is not None:
        before = [r for r in rows if r.transaction.timestamp < skip_at]
        same = [r for r in rows if r.transaction.timestamp == skip_at][skip:]
        rows = same + before
    page = list(rows[:limit])
    if len(rows) <= limit:
        return page, None
    last_at = page[-1].transaction.timestamp
    shown = sum(1 for r in page if r.transaction.timestamp == last_at)
    return page, encode_cursor(last_at, shown + (skip if last_at == skip_at else 0), since, until)
