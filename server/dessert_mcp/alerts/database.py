"""Alerts in the ledger's database: the `alerts` tables, declared once, and `DatabaseAlertStore`.

`alert_webhooks` is the webhooks' outbox: one row per alert event (fired, cleared) and webhook URL, written in the
transaction that keeps the event, and sent by `alerts.webhooks` (which owns what the rows mean)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dessert_mcp.alerts.rules import Alert, Event, Rule, Thresholds
from dessert_mcp.alerts.store import RECENT_KEPT
from dessert_mcp.ledger.tables import from_us, to_us
from dessert_mcp.storage import Database, Migration, Schema, insert_new, upsert

# Queues an alert event for the webhooks, in the transaction that keeps it (`alerts.webhooks.Outbox.queue`):
# (connection, alert, "fired" or "cleared", now as the database's clock reads it).
Enqueue = Callable[[AsyncConnection, Alert, Event, float], Awaitable[None]]

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
WEBHOOKS: Final = sa.Table(
    "alert_webhooks",
    _md,
    sa.Column("message_id", sa.Text, primary_key=True),  # the alert's id and the event: the idempotency key
    sa.Column("target", sa.Text, primary_key=True),  # a hash of the URL, never the URL (Slack's carries a token)
    sa.Column("body", sa.Text, nullable=False),  # the JSON sent, the same at every attempt
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.Double),  # when it is due; None once delivered or failed for good
    sa.Column("claimed_by", sa.Text),  # the replica sending it, until claimed_until
    sa.Column("claimed_until", sa.Double),
    sa.Column("delivered_at", sa.Double),
    sa.Column("failed_at", sa.Double),  # after the last attempt, or at once for an answer no retry changes
    sa.Column("last_status", sa.Integer),  # the receiver's last HTTP status, None when none came
    sa.Column("last_error", sa.Text),  # why the last attempt failed, for the operator
    sa.Index("alert_webhooks_due", "next_at"),
)
ALERTS_SCHEMA: Final = Schema(
    "alerts",
    _md,
    [Migration(1, create=("alerts", "alert_thresholds")), Migration(2, create=("alert_webhooks",))],
)


class DatabaseAlertStore:
    """`AlertStore` on a storage-layer `Database` whose schemas include `ALERTS_SCHEMA` (the ledger's database).

    After `deliver_to(enqueue, queued)`, each alert fired or cleared is handed to `enqueue` in the transaction that
    keeps it (kept means queued, even if the process stops right after), and `queued()` is called after. The webhooks
    wing (`alerts.webhooks`, loaded only when URLs are set) supplies both: this module never imports it."""

    def __init__(self, database: Database) -> None:
        if ALERTS_SCHEMA not in database.schemas:
            raise ValueError("the database must be opened with the alerts' schema (alerts.database.ALERTS_SCHEMA)")
        self._db = database
        self._enqueue: Enqueue | None = None
        self._queued: Callable[[], None] = lambda: None

    def deliver_to(self, enqueue: Enqueue, queued: Callable[[], None]) -> None:
        """Hand every alert event from now on to `enqueue` (the webhooks' `Outbox.queue`), then call `queued`."""
        self._enqueue, self._queued = enqueue, queued

    @property
    def database(self) -> Database:
        return self._db

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
            kept = (await conn.execute(insert_new(conn, ALERTS, [values]).returning(ALERTS.c.id))).first() is not None
            if kept:  # only the replica that kept the alert queues its webhooks
                await self._queue(conn, alert, "fired")
        if kept:
            self._sent()
        return kept

    async def clear(self, alert: Alert) -> bool:
        cleared = None if alert.cleared_at is None else to_us(alert.cleared_at)
        still_active = (ALERTS.c.id == alert.id) & ALERTS.c.cleared_at_us.is_(None)
        async with self._db.transaction() as conn:
            done = bool(
                (await conn.execute(sa.update(ALERTS).where(still_active).values(cleared_at_us=cleared))).rowcount
            )
            if done:
                await self._queue(conn, alert, "cleared")
        if done:
            self._sent()
        return done

    async def _queue(self, conn: AsyncConnection, alert: Alert, event: Event) -> None:
        if self._enqueue is not None:
            await self._enqueue(conn, alert, event, self._db.clock())

    def _sent(self) -> None:
        if self._enqueue is not None:
            self._queued()

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
