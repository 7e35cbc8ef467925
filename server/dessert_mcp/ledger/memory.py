"""The ledger in the process's memory: for tests, and for a server that keeps no database. Lost at exit."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

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
    RowFlag,
    SpendReport,
)
from dessert_mcp.ledger.coverage import Coverage, MarkedRow, StretchSummary
from dessert_mcp.ledger.merge import MergePlan, StoredRow, Stretch, plan_merge
from dessert_mcp.ledger.queries import check_aware, check_limit, in_range, page_of, relevant, time_span
from dessert_mcp.ledger.spend import build_spend, daily_net
from dessert_mcp.models import USAGE_FEED_SIZE, Balance, Period, Transaction


@dataclass
class _Stretch:
    id: int
    first_pos: int
    rows: list[tuple[Transaction, frozenset[RowFlag]]]
    reaches_start: bool
    observed_through: datetime | None
    disordered: int = 0  # rows flagged out_of_order (at least): while there are none, rows are in time order

    @property
    def last_pos(self) -> int:
        return self.first_pos + len(self.rows) - 1

    def summary(self) -> StretchSummary:
        return StretchSummary(self.id, self.rows[0][0], self.rows[-1][0], self.reaches_start, self.observed_through)

    def view(self, lo: datetime, hi: datetime) -> Stretch:
        """The merge's view, with the rows whose time lies in [lo, hi] (and any between them)."""
        if self.disordered:
            inside = [i for i, (tx, _) in enumerate(self.rows) if lo <= tx.timestamp <= hi]
            start, end = (inside[0], inside[-1] + 1) if inside else (0, 0)
        else:
            start = bisect.bisect_left(self.rows, lo, key=_time)
            end = bisect.bisect_right(self.rows, hi, key=_time)
        rows = tuple(
            StoredRow(self.first_pos + i, tx, flags) for i, (tx, flags) in enumerate(self.rows[start:end], start=start)
        )
        return Stretch(
            self.id,
            self.first_pos,
            self.last_pos,
            self.rows[0][0],
            self.rows[-1][0],
            self.reaches_start,
            self.observed_through,
            rows,
        )


@dataclass
class _Account:
    stretches: dict[int, _Stretch] = field(default_factory=dict)
    balances: list[BalanceSnapshot] = field(default_factory=list)
    as_of: datetime | None = None
    empty_before: datetime | None = None

    def coverage(self) -> Coverage:
        marked = []
        for s in self.stretches.values():
            for i, (tx, flags) in enumerate(s.rows):
                if flags:
                    prev = s.rows[i - 1][0].timestamp if i else None
                    marked.append(MarkedRow(s.id, tx.timestamp, prev, flags))
        return Coverage([s.summary() for s in self.stretches.values()], marked, self.as_of, self.empty_before)

    def ordered(self, since: datetime | None, until: datetime | None, *, newest_first: bool) -> list[LedgerRow]:
        keyed = [
            ((tx.timestamp, s.id, s.first_pos + i), LedgerRow(tx, flags))
            for s in self.stretches.values()
            for i, (tx, flags) in enumerate(s.rows)
            if in_range(tx.timestamp, since, until)
        ]
        keyed.sort(key=lambda item: item[0], reverse=newest_first)
        return [row for _, row in keyed]


class InMemoryLedger:
    """`Ledger` kept in dicts. Each method runs without awaiting, so calls from one event loop never interleave."""

    location = "memory"

    def __init__(self, *, feed_size: int = USAGE_FEED_SIZE) -> None:
        self._feed_size = feed_size
        self._accounts: dict[str, _Account] = {}
        self._secret = new_account_secret()
        self._next_id = 1

    async def record_usage(
        self, account: str, transactions: Sequence[Transaction], observed_at: datetime
    ) -> MergeOutcome:
        check_aware(observed_at)
        acct = self._accounts.setdefault(account, _Account())
        acct.as_of = max(acct.as_of, observed_at) if acct.as_of is not None else observed_at
        if not transactions:
            if not acct.stretches:
                acct.empty_before = max(acct.empty_before or observed_at, observed_at)
            return MergeOutcome("empty", 0, 0)
        lo, hi = time_span(transactions)
        ids = relevant([s.summary() for s in acct.stretches.values()], lo, hi)
        views = [acct.stretches[i].view(lo, hi) for i in ids]
        plan = plan_merge(transactions, observed_at, views, feed_size=self._feed_size)
        self._apply(acct, plan)
        return MergeOutcome(plan.placement, plan.added, plan.flagged)

    def _apply(self, acct: _Account, plan: MergePlan) -> None:
        if plan.target is None:
            stretch_id, self._next_id = self._next_id, self._next_id + 1
            rows = [(r.transaction, r.flags) for r in plan.new_rows]
            disordered = sum(1 for _, flags in rows if "out_of_order" in flags)
            acct.stretches[stretch_id] = _Stretch(
                stretch_id, 0, rows, plan.reaches_start, plan.observed_through, disordered
            )
            return
        target = acct.stretches[plan.target]
        target.reaches_start = plan.reaches_start
        target.observed_through = plan.observed_through
        target.disordered += sum(1 for r in plan.new_rows if "out_of_order" in r.flags)
        target.disordered += sum(1 for _, flags in plan.flag_updates if "out_of_order" in flags)
        if not plan.joins:
            # The usual case, a poll: rows go on either end, with no renumbering.
            older = [(r.transaction, r.flags) for r in plan.new_rows if r.pos < target.first_pos]
            newer = [(r.transaction, r.flags) for r in plan.new_rows if r.pos > target.last_pos]
            target.rows[:0] = older
            target.rows.extend(newer)
            target.first_pos -= len(older)
            assert (target.first_pos, target.last_pos) == (plan.first_pos, plan.last_pos)
            for pos, flags in plan.flag_updates:
                tx, old = target.rows[pos - target.first_pos]
                target.rows[pos - target.first_pos] = (tx, old | flags)
            return
        by_pos = {target.first_pos + i: row for i, row in enumerate(target.rows)}
        for join in plan.joins:
            other = acct.stretches.pop(join.stretch)
            for i, (tx, flags) in enumerate(other.rows):
                pos = other.first_pos + i
                if any(a <= pos <= b for a, b in join.drop):
                    kept, kept_flags = by_pos[pos + join.shift]
                    by_pos[pos + join.shift] = (kept, kept_flags | flags)
                else:
                    by_pos[pos + join.shift] = (tx, flags)
        for row in plan.new_rows:
            by_pos[row.pos] = (row.transaction, row.flags)
        for pos, flags in plan.flag_updates:
            tx, old = by_pos[pos]
            by_pos[pos] = (tx, old | flags)
        target.first_pos = plan.first_pos
        target.rows = [by_pos[p] for p in range(plan.first_pos, plan.last_pos + 1)]
        target.disordered = sum(1 for _, flags in target.rows if "out_of_order" in flags)

    async def record_balance(self, account: str, balance: Balance, observed_at: datetime) -> None:
        check_aware(observed_at)
        self._accounts.setdefault(account, _Account()).balances.append(BalanceSnapshot(observed_at, balance))

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
        acct = self._accounts.get(account, _Account())
        rows, next_cursor = page_of(acct.ordered(since, until, newest_first=True), since, until, limit, cursor)
        coverage = acct.coverage()
        return HistoryPage(
            rows=tuple(rows),
            history_complete=coverage.complete(since, until),
            seams=coverage.seams_over(since, until),
            next_cursor=next_cursor,
            as_of=acct.as_of,
        )

    async def spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None, *, period: Period = "day"
    ) -> SpendReport:
        check_aware(since, until)
        acct = self._accounts.get(account, _Account())
        return build_spend(acct.ordered(since, until, newest_first=False), acct.coverage(), since, until, period)

    async def daily_net_spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[DailySpend, ...]:
        check_aware(since, until)
        acct = self._accounts.get(account, _Account())
        return daily_net(acct.ordered(since, until, newest_first=False), acct.coverage(), since, until)

    async def balances(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[BalanceSnapshot, ...]:
        check_aware(since, until)
        acct = self._accounts.get(account, _Account())
        return tuple(sorted((b for b in acct.balances if in_range(b.observed_at, since, until)), key=_observed))

    async def status(self) -> LedgerStatus:
        found = []
        for account, acct in sorted(self._accounts.items()):
            coverage = acct.coverage()
            rows = [tx for s in acct.stretches.values() for tx, _ in s.rows]
            found.append(
                coverage.status(
                    account,
                    rows=len(rows),
                    oldest_at=min((tx.timestamp for tx in rows), default=None),
                    newest_at=max((tx.timestamp for tx in rows), default=None),
                    balance_snapshots=len(acct.balances),
                )
            )
        return LedgerStatus(self.location, tuple(found))

    async def export(
        self, account: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[ExportRow]:
        check_aware(since, until)
        names = [account] if account is not None else sorted(self._accounts)
        for name in names:
            acct = self._accounts.get(name)
            if acct is None:
                continue
            for row in acct.ordered(since, until, newest_first=False):
                yield ExportRow(name, row)

    async def forget(self, account: str) -> int:
        acct = self._accounts.pop(account, None)
        return 0 if acct is None else sum(len(s.rows) for s in acct.stretches.values())

    async def prune(self, older_than: datetime) -> int:
        check_aware(older_than)
        deleted = 0
        for acct in self._accounts.values():
            for stretch_id, s in list(acct.stretches.items()):
                cut = 0
                while cut < len(s.rows) and s.rows[cut][0].timestamp < older_than:
                    cut += 1
                if cut:
                    deleted += cut
                    s.rows, s.first_pos, s.reaches_start = s.rows[cut:], s.first_pos + cut, False
                if not s.rows:
                    del acct.stretches[stretch_id]
            acct.balances = [b for b in acct.balances if b.observed_at >= older_than]
        return deleted

    async def account_for_key(self, key: str) -> str:
        return key_account(key, self._secret)

    async def aclose(self) -> None:
        pass


def _time(row: tuple[Transaction, frozenset[RowFlag]]) -> datetime:
    return row[0].timestamp


def _observed(snapshot: BalanceSnapshot) -> datetime:
    return snapshot.observed_at


if TYPE_CHECKING:  # mypy checks that the class implements the protocol
    _implements: type[Ledger] = InMemoryLedger
