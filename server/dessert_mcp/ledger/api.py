"""The ledger's public API: the values it answers with and the `Ledger` protocol every backend implements.

Semantics (the package docstring says it at more length):

- `account` is an opaque string (see `dessert_mcp.ledger.accounts`); the ledger never sees a key.
- A time range is `since` inclusive, `until` exclusive, both aware datetimes; `None` means "from the first
  transaction" and "up to the last observation" (`as_of`).
- Rows come newest first, exactly as the API returned them, with the flags the merge gave them.
- `history_complete` is true only when the ledger can prove it holds every transaction in the range; `seams` lists
  what makes it false (gaps, unverified seams, ambiguous or conflicting windows) where they overlap the range.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, Literal, Protocol, get_args

# The spans and ad formats of spend totals are the tools' too: declared with their results.
from dessert_mcp.models import AD_FORMATS, AdFormat, Balance, Period, Transaction, TransactionType

# Why a row is flagged. The row is always kept as the API returned it.
#   chain_break: in its own answer, the row before it does not chain to it (older balance_after + this
#                credits_delta != this balance_after).
#   out_of_order: in its own answer, it is older than the row before it (the API promises newest first).
#   ambiguous: identical rows left it unclear whether this row is one the ledger already held; it was kept apart.
#   conflict: its answer contradicts rows the ledger already held for the same time; it was kept apart.
RowFlag = Literal["chain_break", "out_of_order", "ambiguous", "conflict"]
ROW_FLAGS: Final[tuple[RowFlag, ...]] = get_args(RowFlag)

# What may hide transactions between two stretches of history the ledger holds.
#   gap: the stretches do not connect (the balance does not add up); anything may be missing.
#   unverified: the balance adds up but no row is shared, so transactions summing to zero may be missing.
#   ambiguous: identical rows left the placement of a window open; its rows were kept apart and flagged.
#   conflict: a window contradicted stored history; its rows were kept apart and flagged.
SeamKind = Literal["gap", "unverified", "ambiguous", "conflict"]
SEAM_KINDS: Final[tuple[SeamKind, ...]] = get_args(SeamKind)

# How a window was placed against stored history (`record_usage`'s answer).
#   first: the account had no history yet.
#   joined: it shares rows with stored history (proven: nothing missing between them); includes "nothing new".
#   unverified / gap / ambiguous / conflict: kept as a stretch of its own, with a seam of that kind.
#   empty: the answer held no transactions.
Placement = Literal["first", "joined", "unverified", "gap", "ambiguous", "conflict", "empty"]

# Rows per history page unless the caller asks for fewer; and the most a caller may ask for.
DEFAULT_PAGE_ROWS: Final = 50
MAX_PAGE_ROWS: Final = 500


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One stored transaction, as the API returned it, and why it is flagged (if it is)."""

    transaction: Transaction
    flags: frozenset[RowFlag] = frozenset()


@dataclass(frozen=True, slots=True)
class Seam:
    """A place in the history where transactions may be missing.

    `after` is the time of the newest row known before it and `before` the time of the oldest row known after it:
    the time range it may hide. `after` is None before the oldest stored row (nothing earlier is known);
    `before` is None after the newest (nothing later was observed).
    """

    kind: SeamKind
    after: datetime | None
    before: datetime | None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of the history over a range, newest first."""

    rows: tuple[LedgerRow, ...]
    history_complete: bool  # every transaction in the range is in the ledger (over all pages, not only this one)
    seams: tuple[Seam, ...]  # the seams overlapping the range, oldest first; empty when history_complete
    next_cursor: str | None  # pass to `history(..., cursor=)` for the next (older) page; None on the last page
    as_of: datetime | None  # the last observation of this account: the range's end when `until` is None


@dataclass(frozen=True, slots=True)
class Totals:
    """A count of transactions and the sum of their signed credit deltas."""

    transactions: int = 0
    credits: int = 0

    def add(self, credits_delta: int) -> Totals:
        return Totals(self.transactions + 1, self.credits + credits_delta)


def _zero_by_type() -> dict[TransactionType, Totals]:
    return {t: Totals() for t in get_args(TransactionType)}


def _zero_by_format() -> dict[AdFormat, Totals]:
    return {f: Totals() for f in AD_FORMATS}


@dataclass(frozen=True, slots=True)
class SpendBucket:
    """Totals over [start, end): per transaction type, and per ad format over Deduction and Refund rows."""

    start: datetime
    end: datetime
    by_type: Mapping[TransactionType, Totals] = field(default_factory=_zero_by_type)
    by_format: Mapping[AdFormat, Totals] = field(default_factory=_zero_by_format)
    history_complete: bool = False


@dataclass(frozen=True, slots=True)
class SpendReport:
    """Spend over a range, per period (UTC days; weeks starting Monday; calendar months), oldest first."""

    period: Period
    buckets: tuple[SpendBucket, ...]
    total: SpendBucket  # the whole range
    history_complete: bool
    seams: tuple[Seam, ...]
    as_of: datetime | None


@dataclass(frozen=True, slots=True)
class DailySpend:
    """Net credits spent on one UTC day (deductions minus refunds), and whether the ledger holds the whole day."""

    day: date
    net_credits: int
    complete: bool


@dataclass(frozen=True, slots=True)
class BalanceSnapshot:
    observed_at: datetime
    balance: Balance


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    """What `record_usage` did with one answer."""

    placement: Placement
    added: int  # rows new to the ledger
    flagged: int  # rows of this answer stored with a flag


@dataclass(frozen=True, slots=True)
class AccountStatus:
    account: str
    rows: int
    oldest_at: datetime | None
    newest_at: datetime | None
    stretches: int  # runs of history known to be continuous
    seams: Mapping[SeamKind, int]
    flagged_rows: int
    balance_snapshots: int
    last_observed_at: datetime | None


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    location: str  # where the ledger lives, without any password ("memory" for the in-memory ledger)
    accounts: tuple[AccountStatus, ...]


# The columns of an export, in order (CSV header, JSON Lines keys).
EXPORT_FIELDS: Final = (
    "account",
    "at",
    "type",
    "credits_delta",
    "balance_after",
    "usd_amount",
    "description",
    "flags",
)


@dataclass(frozen=True, slots=True)
class ExportRow:
    account: str
    row: LedgerRow

    def as_dict(self) -> dict[str, Any]:
        """The row as EXPORT_FIELDS; flags space-separated, in a fixed order."""
        tx = self.row.transaction
        return {
            "account": self.account,
            "at": tx.at,
            "type": tx.type,
            "credits_delta": tx.credits_delta,
            "balance_after": tx.balance_after,
            "usd_amount": tx.usd_amount,
            "description": tx.description,
            "flags": " ".join(f for f in ROW_FLAGS if f in self.row.flags),
        }


class Ledger(Protocol):
    """Every account's history and balance snapshots. All methods are safe to call concurrently."""

    async def record_usage(
        self, account: str, transactions: Sequence[Transaction], observed_at: datetime
    ) -> MergeOutcome:
        """Merge one usage answer (`transactions` as the API returned them, newest first: the last
        `USAGE_FEED_SIZE` transactions) into the account's history.

        `observed_at` vouches that every transaction older than it is in this answer or before it: take the moment
        the request was sent (or the answer's `Date` header, floored to the second), never the moment the answer
        arrived, which is later than Dessert made it. A cached answer keeps the time its request was sent."""
        ...

    async def record_balance(self, account: str, balance: Balance, observed_at: datetime) -> None: ...

    async def history(
        self,
        account: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = DEFAULT_PAGE_ROWS,
        cursor: str | None = None,
    ) -> HistoryPage:
        """Rows in [since, until), newest first, at most `limit` (1..MAX_PAGE_ROWS). Raises ValueError for a cursor
        this ledger did not make or that belongs to another range."""
        ...

    async def spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None, *, period: Period = "day"
    ) -> SpendReport: ...

    async def daily_net_spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[DailySpend, ...]:
        """One entry per UTC day from the day of `since` (or the oldest row) to the day before `until` (or the day of
        `as_of`), oldest first; days the ledger cannot vouch for have `complete=False`."""
        ...

    async def balances(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[BalanceSnapshot, ...]:
        """Balance snapshots in [since, until), oldest first."""
        ...

    async def status(self) -> LedgerStatus: ...

    def export(
        self, account: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[ExportRow]:
        """Every row in [since, until) of one account (or all, account by account), oldest first."""
        ...

    async def forget(self, account: str) -> int:
        """Delete everything kept about an account; returns the rows deleted."""
        ...

    async def prune(self, older_than: datetime) -> int:
        """Delete rows and balance snapshots older than `older_than`; returns the rows deleted."""
        ...

    async def account_for_key(self, key: str) -> str:
        """The opaque account id for a Dessert key in single-key mode (see `ledger.accounts`)."""
        ...

    async def aclose(self) -> None: ...
