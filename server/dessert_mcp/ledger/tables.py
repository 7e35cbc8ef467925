"""The ledger's tables, declared once (the storage layer derives their migrations).

Times are kept twice: `at` exactly as the API wrote it (rows come back as returned), and `at_us` (microseconds
since the epoch, UTC) to order and select by. Flags are a bit mask (`FLAG_BITS`). No table holds a key: accounts are
opaque ids (`ledger.accounts`), and `ledger_meta` holds the secret those ids are keyed with.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa

from dessert_mcp.ledger.api import ROW_FLAGS, RowFlag
from dessert_mcp.storage import Migration, Schema, user_database_url

# The ledger's SQLite file in the user data directory, unless DESSERT_MCP_DATABASE_URL names another database.
LEDGER_FILE: Final = "ledger.db"

FLAG_BITS: Final[dict[RowFlag, int]] = {flag: 1 << i for i, flag in enumerate(ROW_FLAGS)}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)

_md = sa.MetaData()
ACCOUNTS: Final = sa.Table(
    "ledger_accounts",
    _md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("as_of_us", sa.BigInteger),  # the last answer's read time
    sa.Column("empty_before_us", sa.BigInteger),  # an empty answer was read then: no transaction is older
)
STRETCHES: Final = sa.Table(
    "ledger_stretches",
    _md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.BigInteger, sa.ForeignKey("ledger_accounts.id"), nullable=False, index=True),
    sa.Column("first_pos", sa.BigInteger, nullable=False),
    sa.Column("last_pos", sa.BigInteger, nullable=False),
    sa.Column("reaches_start", sa.Boolean, nullable=False),
    sa.Column("observed_through_us", sa.BigInteger),
)
ROWS: Final = sa.Table(
    "ledger_rows",
    _md,
    sa.Column("stretch_id", sa.BigInteger, sa.ForeignKey("ledger_stretches.id"), primary_key=True),
    sa.Column("pos", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("account_id", sa.BigInteger, nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("at", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("credits_delta", sa.BigInteger, nullable=False),
    sa.Column("balance_after", sa.BigInteger, nullable=False),
    sa.Column("usd_amount", sa.Double),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("flags", sa.Integer, nullable=False),
    sa.Index("ledger_rows_by_time", "account_id", "at_us"),
    # Flagged rows are few and every completeness answer reads them.
    sa.Index(
        "ledger_rows_flagged",
        "account_id",
        sqlite_where=sa.text("flags != 0"),
        postgresql_where=sa.text("flags != 0"),
    ),
)
BALANCES: Final = sa.Table(
    "ledger_balances",
    _md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.BigInteger, nullable=False),
    sa.Column("observed_at_us", sa.BigInteger, nullable=False),
    sa.Column("balance_json", sa.Text, nullable=False),
    sa.Index("ledger_balances_by_time", "account_id", "observed_at_us"),
)
META: Final = sa.Table(
    "ledger_meta",
    _md,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
LEDGER_SCHEMA: Final = Schema(
    "ledger",
    _md,
    [Migration(1, create=("ledger_meta", "ledger_accounts", "ledger_stretches", "ledger_rows", "ledger_balances"))],
)


def default_ledger_url() -> str:
    return user_database_url(LEDGER_FILE)


def to_us(at: datetime) -> int:
    return (at - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + us * _US


def flag_mask(flags: Iterable[RowFlag]) -> int:
    mask = 0
    for flag in flags:
        mask |= FLAG_BITS[flag]
    return mask


def mask_flags(mask: int) -> frozenset[RowFlag]:
    return frozenset(flag for flag, bit in FLAG_BITS.items() if mask & bit)
