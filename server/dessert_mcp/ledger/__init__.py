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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load with their module on first use: the server imports the poller as it starts, and the rest of the ledger
# (the merge, the stores) only when an answer is first kept or read.
if TYPE_CHECKING:
    from dessert_mcp.ledger.accounts import key_account, new_account_secret, remote_account
    from dessert_mcp.ledger.api import (
        DEFAULT_PAGE_ROWS,
        EXPORT_FIELDS,
        MAX_PAGE_ROWS,
        ROW_FLAGS,
        SEAM_KINDS,
        AccountStatus,
        BalanceSnapshot,
        DailySpend,
        ExportRow,
        HistoryPage,
        Ledger,
        LedgerRow,
        LedgerStatus,
        MergeOutcome,
        Placement,
        RowFlag,
        Seam,
        SeamKind,
        SpendBucket,
        SpendReport,
        Totals,
    )
    from dessert_mcp.ledger.memory import InMemoryLedger
    from dessert_mcp.models import AD_FORMATS, PERIODS, AdFormat, Period

# Each name's module (the rest are the ledger's API, `dessert_mcp.ledger.api`).
_MODULES = {
    **dict.fromkeys(("key_account", "new_account_secret", "remote_account"), "dessert_mcp.ledger.accounts"),
    **dict.fromkeys(("AD_FORMATS", "PERIODS", "AdFormat", "Period"), "dessert_mcp.models"),
    "InMemoryLedger": "dessert_mcp.ledger.memory",
}

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


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES.get(name, "dessert_mcp.ledger.api")), name)
