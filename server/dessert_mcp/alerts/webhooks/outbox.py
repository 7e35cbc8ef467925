"""The webhooks' outbox: the `alert_webhooks` rows (alerts.database) from queued to delivered or failed.

A row is queued in the transaction that keeps its alert event (`Outbox.queue`, which the alert store calls), once
however many replicas queue it. A replica sends a row only after claiming it: one conditional UPDATE sets it as the
holder until `claimed_until`, so two replicas never send it at once. The claim outlasts an attempt (its time cap and
a margin); a replica that dies while sending leaves a claim that runs out, and another sends the row again. That,
and a receiver that took a request but whose answer never came back, are the duplicates at-least-once delivery
allows; the receiver sees the same `webhook-id` and drops them.

A row for a URL no longer in the setting is never sent: once it has waited `UNCONFIGURED_GRACE_S` past due with no
replica sending it (replicas change their settings one at a time), it is abandoned: recorded as failed, with why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dessert_mcp.alerts.database import WEBHOOKS
from dessert_mcp.alerts.rules import Alert, Event
from dessert_mcp.alerts.webhooks.message import body, message_id
from dessert_mcp.storage import Database, insert_new

# How long past due a row for a URL this replica does not have waits for a replica that has it, before it is abandoned.
UNCONFIGURED_GRACE_S: Final = 3600.0
ABANDONED: Final = "abandoned: its URL is no longer in DESSERT_ALERT_WEBHOOK_URL"


@dataclass(frozen=True, slots=True)
class Pending:
    """A row due for an attempt."""

    message_id: str
    target: str
    body: str
    attempts: int  # made so far


@dataclass(frozen=True, slots=True)
class Finished:
    """A row after its last attempt (for the operator and the tests)."""

    message_id: str
    target: str
    attempts: int
    delivered: bool
    status: int | None
    error: str | None


class Outbox:
    """The rows of `db`'s outbox for the configured `targets`, as one replica (`holder`) works through them."""

    def __init__(self, db: Database, holder: str, targets: Sequence[str]) -> None:
        self.db = db
        self.holder = holder
        self.targets = tuple(targets)

    async def queue(self, conn: AsyncConnection, alert: Alert, event: Event, now: float) -> None:
        """Queue `alert`'s `event` for each target, in the caller's transaction (the alert store's `Enqueue`)."""
        message, sent = message_id(alert, event), body(alert, event)
        rows = [
            {"message_id": message, "target": t, "body": sent, "created_at": now, "attempts": 0, "next_at": now}
            for t in self.targets
        ]
        await conn.execute(insert_new(conn, WEBHOOKS, rows, key=["message_id", "target"]))

    def _of(self, message: str, target: str) -> sa.ColumnElement[bool]:
        return sa.and_(WEBHOOKS.c.message_id == message, WEBHOOKS.c.target == target)

    async def due(self, now: float, limit: int) -> list[Pending]:
        """Rows due now and claimed by nobody (or by a replica whose claim ran out), oldest due first."""
        query = (
            sa.select(WEBHOOKS.c.message_id, WEBHOOKS.c.target, WEBHOOKS.c.body, WEBHOOKS.c.attempts)
            .where(WEBHOOKS.c.next_at <= now, WEBHOOKS.c.target.in_(self.targets), self._unclaimed(now))
            .order_by(WEBHOOKS.c.next_at)
            .limit(limit)
        )
        async with self.db.transaction(read_only=True) as conn:
            return [Pending(*row) for row in (await conn.execute(query)).all()]

    async def next_due(self) -> float | None:
        """When the next row falls due (claimed ones included: a claim may run out)."""
        query = sa.select(sa.func.min(WEBHOOKS.c.next_at)).where(WEBHOOKS.c.target.in_(self.targets))
        async with self.db.transaction(read_only=True) as conn:
            found = (await conn.execute(query)).scalar()
        return None if found is None else float(found)

    def _unclaimed(self, now: float) -> sa.ColumnElement[bool]:
        return sa.or_(WEBHOOKS.c.claimed_until.is_(None), WEBHOOKS.c.claimed_until <= now)

    async def claim(self, row: Pending, *, now: float, until: float) -> bool:
        """Take `row` for this replica until `until`; False if another replica holds it or it is done."""
        statement = (
            sa.update(WEBHOOKS)
            .where(
                self._of(row.message_id, row.target),
                WEBHOOKS.c.next_at <= now,
                WEBHOOKS.c.attempts == row.attempts,  # nobody attempted it since it was read
                self._unclaimed(now),
            )
            .values(claimed_by=self.holder, claimed_until=until)
        )
        async with self.db.transaction() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def delivered(self, row: Pending, *, now: float, status: int) -> None:
        await self._finish(row, delivered_at=now, next_at=None, last_status=status, last_error=None)

    async def retry(self, row: Pending, *, at: float, status: int | None, error: str) -> None:
        await self._finish(row, next_at=at, last_status=status, last_error=error)

    async def failed(self, row: Pending, *, now: float, status: int | None, error: str) -> None:
        await self._finish(row, failed_at=now, next_at=None, last_status=status, last_error=error)

    async def _finish(self, row: Pending, **values: object) -> None:
        """Record an attempt and release the claim (only ours: a replica that took over after ours ran out owns
        the row now, and records its own attempt)."""
        statement = (
            sa.update(WEBHOOKS)
            .where(self._of(row.message_id, row.target), WEBHOOKS.c.claimed_by == self.holder)
            .values(attempts=row.attempts + 1, claimed_by=None, claimed_until=None, **values)
        )
        async with self.db.transaction() as conn:
            await conn.execute(statement)

    async def finished(self) -> list[Finished]:
        """Every row delivered or failed, oldest first."""
        query = (
            sa.select(WEBHOOKS)
            .where(sa.or_(WEBHOOKS.c.delivered_at.is_not(None), WEBHOOKS.c.failed_at.is_not(None)))
            .order_by(WEBHOOKS.c.created_at, WEBHOOKS.c.message_id, WEBHOOKS.c.target)
        )
        async with self.db.transaction(read_only=True) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Finished(
                r["message_id"],
                r["target"],
                r["attempts"],
                r["delivered_at"] is not None,
                r["last_status"],
                r["last_error"],
            )
            for r in rows
        ]

    async def abandon_unconfigured(self, *, now: float) -> int:
        """Fail, unsent, the rows for URLs not among `targets` that fell due over UNCONFIGURED_GRACE_S ago and that
        nobody holds (no replica configured with their URL sent them meanwhile); how many."""
        statement = (
            sa.update(WEBHOOKS)
            .where(
                WEBHOOKS.c.next_at <= now - UNCONFIGURED_GRACE_S,
                WEBHOOKS.c.target.not_in(self.targets),
                self._unclaimed(now),
            )
            .values(next_at=None, failed_at=now, claimed_by=None, claimed_until=None, last_error=ABANDONED)
        )
        async with self.db.transaction() as conn:
            return (await conn.execute(statement)).rowcount

    async def prune(self, *, delivered_before: float, failed_before: float) -> int:
        """Delete rows delivered before `delivered_before` and failures recorded before `failed_before`."""
        statement = sa.delete(WEBHOOKS).where(
            sa.or_(WEBHOOKS.c.delivered_at < delivered_before, WEBHOOKS.c.failed_at < failed_before)
        )
        async with self.db.transaction() as conn:
            return (await conn.execute(statement)).rowcount
