"""Transaction chains for the ledger's tests: rows whose balances add up, oldest first, and the API's windows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from dessert_mcp.models import USAGE_FEED_SIZE, Transaction, TransactionType

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tx(
    delta: int,
    balance: int,
    at: datetime,
    *,
    kind: TransactionType | None = None,
    description: str | None = None,
) -> Transaction:
    kind = kind or ("Deduction" if delta < 0 else "Purchase")
    if description is None:
        description = "API ad generation (count=1, format=static)" if kind == "Deduction" else "Auto-recharge"
    return Transaction(
        type=kind,
        credits_delta=delta,
        balance_after=balance,
        usd_amount=delta / 10 if kind == "Purchase" else None,
        description=description,
        at=iso(at),
    )


def chain(
    deltas: Sequence[int],
    *,
    start_balance: int = 1000,
    step: timedelta = timedelta(minutes=1),
    start: datetime = T0,
    kinds: Sequence[TransactionType | None] | None = None,
    descriptions: Sequence[str | None] | None = None,
) -> list[Transaction]:
    """Rows oldest first: one per delta, `step` apart, each balance_after the running sum."""
    rows, balance = [], start_balance
    for i, delta in enumerate(deltas):
        balance += delta
        kind = kinds[i] if kinds else None
        description = descriptions[i] if descriptions else None
        rows.append(tx(delta, balance, start + i * step, kind=kind, description=description))
    return rows


def window(rows: Sequence[Transaction], end: int, size: int = USAGE_FEED_SIZE) -> list[Transaction]:
    """What the API answered when rows[:end] existed: the last `size` of them, newest first."""
    return list(reversed(rows[max(0, end - size) : end]))


def read_at(rows: Sequence[Transaction], end: int) -> datetime:
    """A read time for `window(rows, end)`: after its newest row, not after the next one."""
    if end >= len(rows):
        return rows[-1].timestamp + timedelta(seconds=1) if rows else T0
    return rows[end].timestamp
