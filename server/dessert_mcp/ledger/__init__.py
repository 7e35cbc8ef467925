"""The ledger: every account's whole credit history, not only the API's last 50 rows.

Dessert's `GET /v1/usage` answers with the last 50 transactions, newest first, without ids. Every answer the server
sees is merged into a per-account history (`Ledger.record_usage`), and every balance answer kept as a snapshot.

How answers are stitched together (`dessert_mcp.ledger.merge`, pure):

- A transaction's identity is its whole row; two identical rows in one answer are two transactions. Within an
  answer, consecutive rows chain by balance: older `balance_after` + newer `credits_delta` = newer `balance_after`.
- History is kept as *stretches*: runs of rows known to be continuous (nothing missing between neighbours). An
  answer that shares rows with a stretch, placed unambiguously, joins it: a shared row proves nothing is missing
  between the two answers.
- An answer with no row in common starts a stretch of its own. Between two stretches there is a *seam*: `unverified`
  when the balance adds up (transactions summing to zero may still hide there), a `gap` when it does not.
- Nothing is guessed, invented or dropped. Where identical rows leave a placement open, the answer is kept apart and
  its possibly-repeated rows are flagged `ambiguous`; an answer that contradicts stored rows is kept apart and
  flagged `conflict`; a chain break or an order break inside one answer is kept and flagged. Such rows make
  `history_complete` false wherever they lie, and the seams say where.
- A range is `history_complete` only when one stretch covers it from before its start to its end (or the stretch
  reaches the account's first transaction, which an answer shorter than 50 rows shows; or the range ends before the
  moment the stretch's newest answer was read, when nothing newer existed).

Accounts are opaque ids (`dessert_mcp.ledger.accounts`): never a key. `InMemoryLedger` keeps everything in the
process (tests, and `DESSERT_LEDGER=off`-free runs without a database); the database ledger persists it.
"""

from dessert_mcp.ledger.accounts import key_account, new_account_secret, remote_account
from dessert_mcp.ledger.api import (
    AD_FORMATS,
    DEFAULT_PAGE_ROWS,
    EXPORT_FIELDS,
    MAX_PAGE_ROWS,
    PERIODS,
    ROW_FLAGS,
    SEAM_KINDS,
    AccountStatus,
    AdFormat,
    BalanceSnapshot,
    DailySpend,
    ExportRow,
    HistoryPage,
    Ledger,
    LedgerRow,
    LedgerStatus,
    MergeOutcome,
    Period,
    Placement,
    RowFlag,
    Seam,
    SeamKind,
    SpendBucket,
    SpendReport,
    Totals,
)
from dessert_mcp.ledger.memory import InMemoryLedger

__all__ = [
    "AD_FORMATS",
    "DEFAULT_PAGE_ROWS",
    "EXPORT_FIELDS",
    "MAX_PAGE_ROWS",
    "PERIODS",
    "ROW_FLAGS",
    "SEAM_KINDS",
    "AccountStatus",
    "AdFormat",
    "BalanceSnapshot",
    "DailySpend",
    "ExportRow",
    "HistoryPage",
    "InMemoryLedger",
    "Ledger",
    "LedgerRow",
    "LedgerStatus",
    "MergeOutcome",
    "Period",
    "Placement",
    "RowFlag",
    "Seam",
    "SeamKind",
    "SpendBucket",
    "SpendReport",
    "Totals",
    "key_account",
    "new_account_secret",
    "remote_account",
]
