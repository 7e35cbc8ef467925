"""The ledger in a database (SQLite by default, PostgreSQL for replicas), on the storage layer.

Each answer is merged in one transaction, which begins by writing the account's row: on PostgreSQL that row lock, and
on SQLite the database's write lock, make two writers of one account (two processes, two replicas) take turns, and
the second reads what the first committed before it places its own answer. Reads run without a transaction; each
reads the stretches first and the rows after, so a concurrent merge can only add rows to what it vouched for.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dessert_mcp.ledger.accounts import key_account, new_account_secret
from dessert_mcp.ledger.api import (
    DEFAULT_PAGE_ROWS,
    BalanceSnapshot,
    DailySpend,
    ExportRow,
    HistoryPage,
    Ledger,
    LedgerRow,
    LedgerStatus,
    MergeOutcome,
    SpendReport,
)
from dessert_mcp.ledger.coverage import Coverage, MarkedRow, StretchSummary, decode_cursor
from dessert_mcp.ledger.merge import MergePlan, RowKey, StoredRow, Stretch, plan_merge, row_key
from dessert_mcp.ledger.queries import check_aware, check_limit, page_of, relevant, time_span
from dessert_mcp.ledger.spend import build_spend, daily_net
from dessert_mcp.ledger.tables import (
    ACCOUNTS,
    BALANCES,
    LEDGER_SCHEMA,
    META,
    ROWS,
    STRETCHES,
    flag_mask,
    from_us,
    mask_flags,
    to_us,
)
from dessert_mcp.models import USAGE_FEED_SIZE, Balance, Period, Transaction
from dessert_mcp.storage import Database, upsert

_SECRET: Final = "account_secret"
_TX_COLUMNS: Final = (
    ROWS.c.type,
    ROWS.c.credits_delta,
    ROWS.c.balance_after,
    ROWS.c.usd_amount,
    ROWS.c.description,
    ROWS.c.at,
)
_NEWEST_FIRST: Final = (ROWS.c.at_us.desc(), ROWS.c.stretch_id.desc(), ROWS.c.pos.desc())
_OLDEST_FIRST: Final = (ROWS.c.at_us, ROWS.c.stretch_id, ROWS.c.pos)
# Accounts whose last answer is remembered, to recognise it when it comes again.
REPEATS_KEPT: Final = 1024


def _transaction(row: Any, prefix: str = "") -> Transaction:
    """A stored row back as the Transaction it was (validated when it came in)."""
    values = {name: getattr(row, prefix + name) for name in Transaction.model_fields}
    return Transaction.model_construct(**values)


def _row_values(tx: Transaction) -> dict[str, Any]:
    return {
        "at_us": to_us(tx.timestamp),
        "at": tx.at,
        "type": tx.type,
        "credits_delta": tx.credits_delta,
        "balance_after": tx.balance_after,
        "usd_amount": tx.usd_amount,
        "description": tx.description,
    }


def _range(column: sa.ColumnElement[int], since: datetime | None, until: datetime | None) -> list[Any]:
    found: list[Any] = []
    if since is not None:
        found.append(column >= to_us(since))
    if until is not None:
        found.append(column < to_us(until))
    return found


@dataclass(frozen=True, slots=True)
class _Repeat:
    """An answer whose merge added nothing, joined nothing and ended at its stretch's newest row: merged again over
    the same stored stretches and read no earlier, it places the same way (a later read time can only rule out
    matches and orders, and those it relied on do not depend on it) and changes only the read times it vouches for.
    So the polls and calls that see an unchanged account cost a touch of two rows, not a merge."""

    account_id: int
    keys: tuple[RowKey, ...]
    observed_at: datetime
    stretch: int
    stretches: tuple[tuple[int, int, int, bool, datetime | None], ...]  # the target's read time left out
    flagged: int

    @classmethod
    def after(
        cls,
        account_id: int,
        keys: tuple[RowKey, ...],
        observed_at: datetime,
        stored: Sequence[_Stored],
        plan: MergePlan,
    ) -> _Repeat | None:
        """What to recognise the answer by, when merging it (over `stored`, as `plan`) only vouched for it."""
        if plan.placement != "joined" or plan.added or plan.joins or plan.target is None:
            return None
        before = next(s for s in stored if s.summary.id == plan.target).summary.observed_through
        # Its stretch's read time moved to this one's: the answer ends at the stretch's newest row.
        if plan.observed_through != observed_at or (before is not None and before >= observed_at):
            return None
        after = [
            replace(s, summary=replace(s.summary, reaches_start=plan.reaches_start))
            if s.summary.id == plan.target
            else s
            for s in stored
        ]
        return cls(account_id, keys, observed_at, plan.target, _shape(after, plan.target), plan.flagged)

    def holds(
        self,
        account_id: int,
        keys: tuple[RowKey, ...],
        observed_at: datetime,
        stored: Sequence[_Stored],
        oldest: datetime,
    ) -> bool:
        """Whether merging `keys` read at `observed_at` over `stored` would only vouch for it again: the same
        answer, read no earlier, over the same stretches, every other of which ends before the answer's oldest row
        (a stretch after it could turn into a conflict with a later read time)."""
        return (
            account_id == self.account_id
            and observed_at >= self.observed_at
            and keys == self.keys
            and _shape(stored, self.stretch) == self.stretches
            and all(s.summary.id == self.stretch or s.summary.last.timestamp < oldest for s in stored)
        )


def _shape(stored: Sequence[_Stored], target: int) -> tuple[tuple[int, int, int, bool, datetime | None], ...]:
    return tuple(
        (
            s.summary.id,
            s.first_pos,
            s.last_pos,
            s.summary.reaches_start,
            None if s.summary.id == target else s.summary.observed_through,
        )
        for s in stored
    )


async def _vouch(conn: AsyncConnection, stretch: int, observed_at: datetime) -> None:
    """The stretch's rows are all there was before `observed_at` too (its read time only moves forward)."""
    seen, when = STRETCHES.c.observed_through_us, to_us(observed_at)
    await conn.execute(
        STRETCHES.update()
        .where(STRETCHES.c.id == stretch)
        .values(observed_through_us=sa.case((seen.is_(None), when), (seen < when, when), else_=seen))
    )


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stretch's record: its summary and where its rows are."""

    summary: StretchSummary
    first_pos: int
    last_pos: int


class DatabaseLedger:
    """`Ledger` on a storage-layer `Database` whose schemas include `LEDGER_SCHEMA`. Faults of the database raise
    `StorageUnavailable` (the caller answers from the API and says so once)."""

    def __init__(self, database: Database, *, feed_size: int = USAGE_FEED_SIZE) -> None:
        if LEDGER_SCHEMA not in database.schemas:
            raise ValueError("the database must be opened with the ledger's schema (ledger.tables.LEDGER_SCHEMA)")
        self._db = database
        self._feed_size = feed_size
        self._secret: bytes | None = None
        self._repeats: dict[str, _Repeat] = {}  # account: its last answer, when merging it again only vouches

    @property
    def location(self) -> str:
        return self._db.where

    @property
    def database(self) -> Database:
        """The storage-layer database it is in (for upkeep under its leases, such as retention)."""
        return self._db

    # -- writing ----------------------------------------------------------------------------------------------

    async def _lock_account(self, conn: AsyncConnection, account: str, observed_us: int | None) -> int:
        """Create or touch the account's row (and so lock it until the transaction ends); returns its id."""
        as_of = ACCOUNTS.c.as_of_us
        later = (
            as_of
            if observed_us is None
            else sa.case((as_of.is_(None), observed_us), (as_of < observed_us, observed_us), else_=as_of)
        )
        statement = upsert(
            conn, ACCOUNTS, {"name": account, "as_of_us": observed_us}, key=["name"], update={"as_of_us": later}
        ).returning(ACCOUNTS.c.id)
        return int((await conn.execute(statement)).scalar_one())

    async def record_usage(
        self, account: str, transactions: Sequence[Transaction], observed_at: datetime
    ) -> MergeOutcome:
        check_aware(observed_at)
        async with self._db.transaction() as conn:
            account_id = await self._lock_account(conn, account, to_us(observed_at))
            stored = await _stretches(conn, account_id)
            if not transactions:
                if not stored:
                    empty = ACCOUNTS.c.empty_before_us
                    when = to_us(observed_at)
                    await conn.execute(
                        ACCOUNTS.update()
                        .where(ACCOUNTS.c.id == account_id)
                        .values(empty_before_us=sa.case((empty.is_(None), when), (empty < when, when), else_=empty))
                    )
                return MergeOutcome("empty", 0, 0)
            lo, hi = time_span(transactions)
            keys = tuple(row_key(tx) for tx in transactions)
            repeat = self._repeats.get(account)
            if repeat is not None and repeat.holds(account_id, keys, observed_at, stored, lo):
                await _vouch(conn, repeat.stretch, observed_at)
                return MergeOutcome("joined", 0, repeat.flagged)
            by_id = {s.summary.id: s for s in stored}
            wanted = [by_id[i] for i in relevant([s.summary for s in stored], lo, hi)]
            views = await _views(conn, account_id, wanted, lo, hi)
            plan = plan_merge(transactions, observed_at, views, feed_size=self._feed_size)
            await _apply(conn, account_id, plan)
        self._repeats.pop(account, None)
        repeat = _Repeat.after(account_id, keys, observed_at, stored, plan)
        if repeat is not None:
            if len(self._repeats) >= REPEATS_KEPT:
                self._repeats.pop(next(iter(self._repeats)))
            self._repeats[account] = repeat
        return MergeOutcome(plan.placement, plan.added, plan.flagged)

    async def record_balance(self, account: str, balance: Balance, observed_at: datetime) -> None:
        check_aware(observed_at)
        async with self._db.transaction() as conn:
            account_id = await self._lock_account(conn, account, None)
            await conn.execute(
                BALANCES.insert().values(
                    account_id=account_id, observed_at_us=to_us(observed_at), balance_json=balance.model_dump_json()
                )
            )

    # -- reading ----------------------------------------------------------------------------------------------

    async def _coverage(self, conn: AsyncConnection, account: str) -> tuple[int | None, Coverage]:
        found = (
            await conn.execute(
                sa.select(ACCOUNTS.c.id, ACCOUNTS.c.as_of_us, ACCOUNTS.c.empty_before_us).where(
                    ACCOUNTS.c.name == account
                )
            )
        ).first()
        if found is None:
            return None, Coverage((), (), None)
        stored = await _stretches(conn, found.id)
        prev = ROWS.alias("prev")
        marked = await conn.execute(
            sa.select(ROWS.c.stretch_id, ROWS.c.at_us, ROWS.c.flags, prev.c.at_us.label("prev_at_us"))
            .outerjoin(prev, sa.and_(prev.c.stretch_id == ROWS.c.stretch_id, prev.c.pos == ROWS.c.pos - 1))
            .where(ROWS.c.account_id == found.id, ROWS.c.flags != 0)
        )
        return found.id, Coverage(
            [s.summary for s in stored],
            [
                MarkedRow(
                    r.stretch_id,
                    from_us(r.at_us),
                    None if r.prev_at_us is None else from_us(r.prev_at_us),
                    mask_flags(r.flags),
                )
                for r in marked
            ],
            None if found.as_of_us is None else from_us(found.as_of_us),
            None if found.empty_before_us is None else from_us(found.empty_before_us),
        )

    async def history(
        self,
        account: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = DEFAULT_PAGE_ROWS,
        cursor: str | None = None,
    ) -> HistoryPage:
        check_aware(since, until)
        check_limit(limit)
        position = decode_cursor(cursor, since, until) if cursor is not None else None
        async with self._db.transaction(read_only=True) as conn:
            account_id, coverage = await self._coverage(conn, account)
            rows: list[LedgerRow] = []
            if account_id is not None:
                where = [ROWS.c.account_id == account_id, *_range(ROWS.c.at_us, since, until)]
                fetch = limit + 1
                if position is not None:
                    where.append(ROWS.c.at_us <= to_us(position[0]))
                    fetch += position[1]
                result = await conn.execute(
                    sa.select(*_TX_COLUMNS, ROWS.c.flags).where(*where).order_by(*_NEWEST_FIRST).limit(fetch)
                )
                rows = [LedgerRow(_transaction(r), mask_flags(r.flags)) for r in result]
        page, next_cursor = page_of(rows, since, until, limit, cursor)
        return HistoryPage(
            rows=tuple(page),
            history_complete=coverage.complete(since, until),
            seams=coverage.seams_over(since, until),
            next_cursor=next_cursor,
            as_of=coverage.as_of,
        )

    async def _rows_oldest_first(
        self, account: str, since: datetime | None, until: datetime | None
    ) -> tuple[list[LedgerRow], Coverage]:
        async with self._db.transaction(read_only=True) as conn:
            account_id, coverage = await self._coverage(conn, account)
            if account_id is None:
                return [], coverage
            result = await conn.execute(
                sa.select(*_TX_COLUMNS, ROWS.c.flags)
                .where(ROWS.c.account_id == account_id, *_range(ROWS.c.at_us, since, until))
                .order_by(*_OLDEST_FIRST)
            )
            return [LedgerRow(_transaction(r), mask_flags(r.flags)) for r in result], coverage

    async def spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None, *, period: Period = "day"
    ) -> SpendReport:
        check_aware(since, until)
        rows, coverage = await self._rows_oldest_first(account, since, until)
        return build_spend(rows, coverage, since, until, period)

    async def daily_net_spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[DailySpend, ...]:
        check_aware(since, until)
        rows, coverage = await self._rows_oldest_first(account, since, until)
        return daily_net(rows, coverage, since, until)

    async def balances(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[BalanceSnapshot, ...]:
        check_aware(since, until)
        async with self._db.transaction(read_only=True) as conn:
            result = await conn.execute(
                sa.select(BALANCES.c.observed_at_us, BALANCES.c.balance_json)
                .join(ACCOUNTS, ACCOUNTS.c.id == BALANCES.c.account_id)
                .where(ACCOUNTS.c.name == account, *_range(BALANCES.c.observed_at_us, since, until))
                .order_by(BALANCES.c.observed_at_us, BALANCES.c.id)
            )
            return tuple(
                BalanceSnapshot(from_us(r.observed_at_us), Balance.model_validate_json(r.balance_json)) for r in result
            )

    async def status(self) -> LedgerStatus:
        found = []
        async with self._db.transaction(read_only=True) as conn:
            counts = {
                r.account_id: r
                for r in await conn.execute(
                    sa.select(
                        ROWS.c.account_id,
                        sa.func.count().label("rows"),
                        sa.func.min(ROWS.c.at_us).label("oldest"),
                        sa.func.max(ROWS.c.at_us).label("newest"),
                    ).group_by(ROWS.c.account_id)
                )
            }
            snapshots = {
                r.account_id: r.n
                for r in await conn.execute(
                    sa.select(BALANCES.c.account_id, sa.func.count().label("n")).group_by(BALANCES.c.account_id)
                )
            }
            accounts = (await conn.execute(sa.select(ACCOUNTS.c.id, ACCOUNTS.c.name).order_by(ACCOUNTS.c.name))).all()
            for account in accounts:
                _, coverage = await self._coverage(conn, account.name)
                count = counts.get(account.id)
                found.append(
                    coverage.status(
                        account.name,
                        rows=0 if count is None else count.rows,
                        oldest_at=None if count is None else from_us(count.oldest),
                        newest_at=None if count is None else from_us(count.newest),
                        balance_snapshots=snapshots.get(account.id, 0),
                    )
                )
        return LedgerStatus(self.location, tuple(found))

    async def export(
        self, account: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[ExportRow]:
        check_aware(since, until)
        where = _range(ROWS.c.at_us, since, until)
        if account is not None:
            where.append(ACCOUNTS.c.name == account)
        # A server-side cursor (rows stream, however many): PostgreSQL opens one only inside a transaction.
        async with self._db.transaction() as conn:
            result = await conn.stream(
                sa.select(ACCOUNTS.c.name, *_TX_COLUMNS, ROWS.c.flags)
                .join(ACCOUNTS, ACCOUNTS.c.id == ROWS.c.account_id)
                .where(*where)
                .order_by(ACCOUNTS.c.name, *_OLDEST_FIRST)
            )
            async for r in result:
                yield ExportRow(r.name, LedgerRow(_transaction(r), mask_flags(r.flags)))

    # -- data rights ------------------------------------------------------------------------------------------

    async def forget(self, account: str) -> int:
        async with self._db.transaction() as conn:
            account_id = (await conn.execute(sa.select(ACCOUNTS.c.id).where(ACCOUNTS.c.name == account))).scalar()
            if account_id is None:
                return 0
            deleted = (await conn.execute(ROWS.delete().where(ROWS.c.account_id == account_id))).rowcount
            await conn.execute(STRETCHES.delete().where(STRETCHES.c.account_id == account_id))
            await conn.execute(BALANCES.delete().where(BALANCES.c.account_id == account_id))
            await conn.execute(ACCOUNTS.delete().where(ACCOUNTS.c.id == account_id))
            return int(deleted)

    async def prune(self, older_than: datetime) -> int:
        """Rows go from the old end of each stretch, so what remains of it stays continuous."""
        check_aware(older_than)
        cutoff = to_us(older_than)
        deleted = 0
        async with self._db.transaction() as conn:
            kept_from = (
                sa.select(sa.func.min(ROWS.c.pos))
                .where(ROWS.c.stretch_id == STRETCHES.c.id, ROWS.c.at_us >= cutoff)
                .scalar_subquery()
            )
            old = sa.exists().where(ROWS.c.stretch_id == STRETCHES.c.id, ROWS.c.at_us < cutoff)
            for stretch in (await conn.execute(sa.select(STRETCHES.c.id, kept_from.label("cut")).where(old))).all():
                if stretch.cut is None:
                    gone = ROWS.delete().where(ROWS.c.stretch_id == stretch.id)
                else:
                    gone = ROWS.delete().where(ROWS.c.stretch_id == stretch.id, ROWS.c.pos < stretch.cut)
                deleted += (await conn.execute(gone)).rowcount
                if stretch.cut is None:
                    await conn.execute(STRETCHES.delete().where(STRETCHES.c.id == stretch.id))
                else:
                    await conn.execute(
                        STRETCHES.update()
                        .where(STRETCHES.c.id == stretch.id)
                        .values(first_pos=stretch.cut, reaches_start=False)
                    )
            await conn.execute(BALANCES.delete().where(BALANCES.c.observed_at_us < cutoff))
        return deleted

    async def account_for_key(self, key: str) -> str:
        if self._secret is None:
            async with self._db.transaction() as conn:
                fresh = base64.b64encode(new_account_secret()).decode()
                # Whoever writes it first wins; everyone reads the same one back.
                statement = upsert(
                    conn, META, {"name": _SECRET, "value": fresh}, key=["name"], update={"value": META.c.value}
                ).returning(META.c.value)
                self._secret = base64.b64decode((await conn.execute(statement)).scalar_one())
        return key_account(key, self._secret)

    async def aclose(self) -> None:
        await self._db.aclose()


# -- the merge's reads and writes ---------------------------------------------------------------------------------


def _stretches_query() -> sa.Select[Any]:
    """An account's stretches with their first and last rows (every merge and every read runs it: built once)."""
    first, last = ROWS.alias("first_row"), ROWS.alias("last_row")
    labelled = [c.label("f_" + c.name) for c in first.c if c.name in Transaction.model_fields]
    labelled += [c.label("l_" + c.name) for c in last.c if c.name in Transaction.model_fields]
    return (
        sa.select(STRETCHES, *labelled)
        .join(first, sa.and_(first.c.stretch_id == STRETCHES.c.id, first.c.pos == STRETCHES.c.first_pos))
        .join(last, sa.and_(last.c.stretch_id == STRETCHES.c.id, last.c.pos == STRETCHES.c.last_pos))
        .where(STRETCHES.c.account_id == sa.bindparam("account_id"))
    )


_STRETCHES_OF: Final = _stretches_query()


async def _stretches(conn: AsyncConnection, account_id: int) -> list[_Stored]:
    result = await conn.execute(_STRETCHES_OF, {"account_id": account_id})
    return [
        _Stored(
            StretchSummary(
                r.id,
                _transaction(r, "f_"),
                _transaction(r, "l_"),
                bool(r.reaches_start),
                None if r.observed_through_us is None else from_us(r.observed_through_us),
            ),
            r.first_pos,
            r.last_pos,
        )
        for r in result
    ]


async def _views(
    conn: AsyncConnection, account_id: int, stored: Sequence[_Stored], lo: datetime, hi: datetime
) -> list[Stretch]:
    """The merge's view of each stretch: its rows whose time lies in [lo, hi], and every row between them."""
    if not stored:
        return []
    ids = [s.summary.id for s in stored]
    spans = {
        r.stretch_id: (r.lo, r.hi)
        for r in await conn.execute(
            sa.select(ROWS.c.stretch_id, sa.func.min(ROWS.c.pos).label("lo"), sa.func.max(ROWS.c.pos).label("hi"))
            .where(
                # By the account too, so the time index finds them (a stretch may hold years of rows).
                ROWS.c.account_id == account_id,
                ROWS.c.stretch_id.in_(ids),
                ROWS.c.at_us.between(to_us(lo), to_us(hi)),
            )
            .group_by(ROWS.c.stretch_id)
        )
    }
    near: dict[int, list[StoredRow]] = {i: [] for i in ids}
    if spans:
        result = await conn.execute(
            sa.select(ROWS.c.stretch_id, ROWS.c.pos, ROWS.c.flags, *_TX_COLUMNS)
            .where(sa.or_(*(sa.and_(ROWS.c.stretch_id == i, ROWS.c.pos.between(a, b)) for i, (a, b) in spans.items())))
            .order_by(ROWS.c.stretch_id, ROWS.c.pos)
        )
        for r in result:
            near[r.stretch_id].append(StoredRow(r.pos, _transaction(r), mask_flags(r.flags)))
    return [
        Stretch(
            s.summary.id,
            s.first_pos,
            s.last_pos,
            s.summary.first,
            s.summary.last,
            s.summary.reaches_start,
            s.summary.observed_through,
            tuple(near[s.summary.id]),
        )
        for s in stored
    ]


def _insert_rows(account_id: int, stretch_id: int, rows: Sequence[StoredRow]) -> tuple[sa.Insert, list[dict[str, Any]]]:
    return ROWS.insert(), [
        {
            "stretch_id": stretch_id,
            "pos": r.pos,
            "account_id": account_id,
            "flags": flag_mask(r.flags),
            **_row_values(r.transaction),
        }
        for r in rows
    ]


async def _apply(conn: AsyncConnection, account_id: int, plan: MergePlan) -> None:
    observed = None if plan.observed_through is None else to_us(plan.observed_through)
    if plan.target is None:
        stretch_id = (
            await conn.execute(
                STRETCHES.insert()
                .values(
                    account_id=account_id,
                    first_pos=plan.first_pos,
                    last_pos=plan.last_pos,
                    reaches_start=plan.reaches_start,
                    observed_through_us=observed,
                )
                .returning(STRETCHES.c.id)
            )
        ).scalar_one()
        await conn.execute(*_insert_rows(account_id, stretch_id, plan.new_rows))
        return
    target = plan.target
    or_flags = ROWS.update().values(flags=ROWS.c.flags.op("|")(sa.bindparam("more")))
    for join in plan.joins:
        for lo, hi in join.drop:
            in_drop = (ROWS.c.stretch_id == join.stretch, ROWS.c.pos.between(lo, hi))
            flagged = (await conn.execute(sa.select(ROWS.c.pos, ROWS.c.flags).where(*in_drop, ROWS.c.flags != 0))).all()
            for r in flagged:
                await conn.execute(
                    or_flags.where(ROWS.c.stretch_id == target, ROWS.c.pos == r.pos + join.shift), {"more": r.flags}
                )
            await conn.execute(ROWS.delete().where(*in_drop))
        await conn.execute(
            ROWS.update()
            .where(ROWS.c.stretch_id == join.stretch)
            .values(stretch_id=target, pos=ROWS.c.pos + join.shift)
        )
        await conn.execute(STRETCHES.delete().where(STRETCHES.c.id == join.stretch))
    if plan.new_rows:
        await conn.execute(*_insert_rows(account_id, target, plan.new_rows))
    for pos, flags in plan.flag_updates:
        await conn.execute(or_flags.where(ROWS.c.stretch_id == target, ROWS.c.pos == pos), {"more": flag_mask(flags)})
    await conn.execute(
        STRETCHES.update()
        .where(STRETCHES.c.id == target)
        .values(
            first_pos=plan.first_pos,
            last_pos=plan.last_pos,
            reaches_start=plan.reaches_start,
            observed_through_us=observed,
        )
    )


if TYPE_CHECKING:  # mypy checks that the class implements the protocol
    _implements: type[Ledger] = DatabaseLedger
