"""Alerts in the ledger's database: the `alerts` tables, declared once, and `DatabaseAlertStore`."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from dessert_mcp.alerts.rules import Alert, Rule, Thresholds
from dessert_mcp.alerts.store import RECENT_KEPT
from dessert_mcp.ledger.tables import from_us, to_us
from dessert_mcp.storage import Database, Migration, Schema, insert_new, upsert

_md = sa.MetaData()
ALERTS: Final = sa.Table(
    "alerts",
    _md,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("value", sa.Double, nullable=False),
    sa.Column("threshold", sa.Double, nullable=False),
    sa.Column("fired_at_us", sa.BigInteger, nullable=False),
    sa.Column("cleared_at_us", sa.BigInteger),
    sa.Index("alerts_by_account", "account", "fired_at_us"),
    # One active level alert per account and rule, whichever replica fires it first (`fire` inserts if absent).
    # Event alerts are born with their `cleared_at` (the end of their day), so each may stand beside others.
    sa.Index(
        "alerts_one_active",
        "account",
        "rule",
        unique=True,
        sqlite_where=sa.text("cleared_at_us IS NULL"),
        postgresql_where=sa.text("cleared_at_us IS NULL"),
    ),
)
THRESHOLDS: Final = sa.Table(
    "alert_thresholds",
    _md,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("balance_below", sa.BigInteger, nullable=False),
    sa.Column("runway_days", sa.Double, nullable=False),
    sa.Column("spike_factor", sa.Double, nullable=False),
)
ALERTS_SCHEMA: Final = Schema("alerts", _md, [Migration(1, create=("alerts", "alert_thresholds"))])


class DatabaseAlertStore:
    """`AlertStore` on a storage-layer `Database` whose schemas include `ALERTS_SCHEMA` (the ledger's database)."""

    def __init__(self, database: Database) -> None:
        if ALERTS_SCHEMA not in database.schemas:
            raise ValueError("the database must be opened with the alerts' schema (alerts.database.ALERTS_SCHEMA)")
        self._db = database

    async def fire(self, alert: Alert) -> bool:
        values = {
            "id": alert.id,
            "account": alert.account,
            "rule": alert.rule,
            "value": alert.value,
            "threshold": alert.threshold,
            "fired_at_us": to_us(alert.fired_at),
            "cleared_at_us": None if alert.cleared_at is None else to_us(alert.cleared_at),
        }
        async with self._db.transaction() as conn:
            kept = await conn.execute(insert_new(conn, ALERTS, [values]).returning(ALERTS.c.id))
            return kept.first() is not None

    async def clear(self, alert: Alert) -> bool:
        cleared = None if alert.cleared_at is None else to_us(alert.cleared_at)
        still_active = (ALERTS.c.id == alert.id) & ALERTS.c.cleared_at_us.is_(None)
        async with self._db.transaction() as conn:
            done = await conn.execute(sa.update(ALERTS).where(still_active).values(cleared_at_us=cleared))
            return bool(done.rowcount)

    async def recent(self, account: str, limit: int = RECENT_KEPT) -> list[Alert]:
        query = (
            sa.select(ALERTS)
            .where(ALERTS.c.account == account)
            .order_by(ALERTS.c.fired_at_us.desc(), ALERTS.c.id)
            .limit(limit)
        )
        async with self._db.transaction(read_only=True) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Alert(
                r["id"],
                _rule(r["rule"]),
                r["account"],
                r["value"],
                r["threshold"],
                from_us(r["fired_at_us"]),
                None if r["cleared_at_us"] is None else from_us(r["cleared_at_us"]),
            )
            for r in rows
        ]

    async def thresholds(self, account: str) -> Thresholds | None:
        async with self._db.transaction(read_only=True) as conn:
            row = (await conn.execute(sa.select(THRESHOLDS).where(THRESHOLDS.c.account == account))).mappings().first()
        if row is None:
            return None
        return Thresholds(row["balance_below"], row["runway_days"], row["spike_factor"])

    async def set_thresholds(self, account: str, thresholds: Thresholds) -> None:
        values = {
            "account": account,
            "balance_below": thresholds.balance_below,
            "runway_days": thresholds.runway_days,
            "spike_factor": thresholds.spike_factor,
        }
        async with self._db.transaction() as conn:
            await conn.execute(upsert(conn, THRESHOLDS, values, key=["account"]))


def _rule(name: str) -> Rule:
    return name  # type: ignore[return-value]  # written by fire() from a Rule
