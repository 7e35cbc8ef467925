"""Watching the accounts: every answer the ledger keeps (from the poller or a tool call) is checked for a change;
a change is published (the resources that changed, per account) and judged by the alert rules.

`Watcher.ledger(ledger)` wraps the ledger that the recorder and the poller write to, so both paths are watched
without either knowing. The watch never fails a write: a failing alert store is logged once and skipped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, TypeVar

import anyio

from dessert_mcp.alerts.rules import (
    Alert,
    Reading,
    Rule,
    Thresholds,
    decide,
    trailing_median,
)
from dessert_mcp.alerts.store import AlertStore, active
from dessert_mcp.events import ALERTS_URI, BALANCE_URI, USAGE_URI
from dessert_mcp.history import FORECAST_DAYS, whole_day_nets
from dessert_mcp.ledger import (
    BalanceSnapshot,
    DailySpend,
    ExportRow,
    HistoryPage,
    Ledger,
    LedgerStatus,
    MergeOutcome,
    Period,
    SpendReport,
)
from dessert_mcp.ledger.api import DEFAULT_PAGE_ROWS
from dessert_mcp.models import Balance, Forecast, Transaction

logger = logging.getLogger("dessert_mcp.alerts")

# Accounts whose last balance and recent alerts are kept in memory (the rest are read again when needed).
ACCOUNTS_KEPT: Final = 1024

V = TypeVar("V")


class Publish(Protocol):
    """Tell the account's listeners that these resources changed (the MCP layer's event hub)."""

    async def __call__(self, account: str, uris: Sequence[str]) -> None: ...


class Watcher:
    """Publishes each account's changes and keeps its alerts (`store`), judged against `defaults` or the thresholds
    its user set."""

    def __init__(
        self,
        store: AlertStore,
        defaults: Thresholds,
        *,
        publish: Publish | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.defaults = defaults
        self.publish = publish
        self._clock = clock
        self._balances: OrderedDict[str, int] = OrderedDict()
        self._recent: OrderedDict[str, list[Alert]] = OrderedDict()
        self._lock = anyio.Lock()  # one judgement at a time: two reads of one account must not both fire
        self._warned = False

    def ledger(self, ledger: Ledger) -> Ledger:
        return _WatchedLedger(ledger, self)

    async def thresholds(self, account: str) -> Thresholds:
        return await self.store.thresholds(account) or self.defaults

    async def recent(self, account: str) -> list[Alert]:
        """The account's alerts, newest first (kept in memory after the first read); none while the store fails."""
        kept = self._recent.get(account)
        if kept is None:
            try:
                kept = await self.store.recent(account)
            except Exception as exc:  # whatever the store raises: the call answers without alerts
                self._failed(exc)
                return []
            _keep(self._recent, account, kept)
        return kept

    def forget(self, account: str) -> None:
        """The account's alerts changed elsewhere (another replica): read them again when next needed."""
        self._recent.pop(account, None)

    async def active(self, account: str) -> list[Alert]:
        return active(await self.recent(account), self._clock())

    async def observed(
        self,
        ledger: Ledger,
        account: str,
        *,
        usage: Sequence[Transaction] | None = None,
        outcome: MergeOutcome | None = None,
        balance: int | None = None,
    ) -> None:
        """An answer was kept: publish what changed and judge the rules. Never raises."""
        try:
            await self._observed(ledger, account, usage, outcome, balance)
        except Exception as exc:  # whatever the store raises: the write is done, the watch tries again next time
            self._failed(exc)
        else:
            self._warned = False

    def _failed(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("Alerts could not be kept or read (%s); tried again on the next change", type(exc).__name__)

    async def _observed(
        self,
        ledger: Ledger,
        account: str,
        usage: Sequence[Transaction] | None,
        outcome: MergeOutcome | None,
        balance: int | None,
    ) -> None:
        changed: list[str] = []
        new_rows: Sequence[Transaction] = ()
        if usage is not None and outcome is not None and (outcome.added or outcome.placement == "gap"):
            changed.append(USAGE_URI)
            # An account's past (its first read) is not news, nor are rows the ledger kept apart as doubtful.
            if outcome.placement in ("joined", "unverified", "gap"):
                new_rows = usage[: outcome.added]
            if usage:
                balance = usage[0].balance_after
        if balance is not None and self._balances.get(account) != balance:
            _keep(self._balances, account, balance)
            changed.insert(0, BALANCE_URI)
        if not changed:
            return
        try:
            reading = await self._reading(ledger, account, usage, balance, new_rows, outcome)
            if await self._judge(account, reading):
                changed.append(ALERTS_URI)
        finally:  # what the ledger kept changed, whether or not the alerts could be judged
            if self.publish is not None:
                await self.publish(account, changed)

    async def _judge(self, account: str, reading: Reading) -> bool:
        """Judge the rules on what was kept and keep the alerts fired or cleared; True if any were."""
        async with self._lock:
            now = self._clock()
            recent = await self.recent(account)
            current: dict[Rule, Alert] = {}
            for alert in recent:
                if alert.cleared_at is None:
                    current.setdefault(alert.rule, alert)
            judged_fired, judged_cleared = decide(account, reading, await self.thresholds(account), current, now)
            try:
                # The store says which this process did: another replica sharing it may have done some first.
                cleared = [a for a in judged_cleared if await self.store.clear(a)]
                fired = [a for a in judged_fired if await self.store.fire(a)]
            except BaseException:
                self.forget(account)  # kept in part: read the store again next time
                raise
            if len(fired) + len(cleared) < len(judged_fired) + len(judged_cleared):
                self.forget(account)  # the kept list missed another replica's alerts: read it again
            elif fired or cleared:
                gone = {a.id for a in cleared}
                kept = [*reversed(fired), *(a for a in recent if a.id not in gone), *cleared]
                _keep(self._recent, account, sorted(kept, key=lambda a: a.fired_at, reverse=True))
            return bool(fired or cleared)

    async def _reading(
        self,
        ledger: Ledger,
        account: str,
        usage: Sequence[Transaction] | None,
        balance: int | None,
        new_rows: Sequence[Transaction],
        outcome: MergeOutcome | None,
    ) -> Reading:
        if usage is None:
            return Reading(balance=balance)
        now = self._clock()
        days = await ledger.daily_net_spend(account, now - timedelta(days=FORECAST_DAYS + 1), None)
        nets = whole_day_nets(days)
        forecast = Forecast.of(list(reversed(usage))).with_daily(nets)
        today = days[-1].net_credits if days else None
        return Reading(
            balance=balance,
            runway_days=forecast.days_until_empty,
            today_spend=today,
            trailing_median=trailing_median(nets),
            new_rows=new_rows,
            gap=outcome is not None and outcome.placement == "gap",
        )


def _keep(kept: OrderedDict[str, V], account: str, value: V) -> None:
    kept[account] = value
    kept.move_to_end(account)
    while len(kept) > ACCOUNTS_KEPT:
        kept.popitem(last=False)


class _WatchedLedger:
    """The ledger, with each kept answer handed to the watcher after it is written."""

    def __init__(self, ledger: Ledger, watcher: Watcher) -> None:
        self._ledger = ledger
        self._watcher = watcher

    @property
    def database(self) -> object:
        """The wrapped ledger's database, if it has one (the retention chore prunes through it)."""
        return getattr(self._ledger, "database", None)

    async def record_usage(
        self, account: str, transactions: Sequence[Transaction], observed_at: datetime
    ) -> MergeOutcome:
        outcome = await self._ledger.record_usage(account, transactions, observed_at)
        await self._watcher.observed(self._ledger, account, usage=transactions, outcome=outcome)
        return outcome

    async def record_balance(self, account: str, balance: Balance, observed_at: datetime) -> None:
        await self._ledger.record_balance(account, balance, observed_at)
        await self._watcher.observed(self._ledger, account, balance=balance.credits_balance)

    async def history(
        self,
        account: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = DEFAULT_PAGE_ROWS,
        cursor: str | None = None,
    ) -> HistoryPage:
        return await self._ledger.history(account, since, until, limit=limit, cursor=cursor)

    async def spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None, *, period: Period = "day"
    ) -> SpendReport:
        return await self._ledger.spend(account, since, until, period=period)

    async def daily_net_spend(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[DailySpend, ...]:
        return await self._ledger.daily_net_spend(account, since, until)

    async def balances(
        self, account: str, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[BalanceSnapshot, ...]:
        return await self._ledger.balances(account, since, until)

    async def status(self) -> LedgerStatus:
        return await self._ledger.status()

    def export(
        self, account: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[ExportRow]:
        return self._ledger.export(account, since, until)

    async def forget(self, account: str) -> int:
        return await self._ledger.forget(account)

    async def prune(self, older_than: datetime) -> int:
        return await self._ledger.prune(older_than)

    async def account_for_key(self, key: str) -> str:
        return await self._ledger.account_for_key(key)

    async def aclose(self) -> None:
        await self._ledger.aclose()
