"""Where alerts are kept: the `AlertStore` protocol and its in-process implementation (the database one is in
`alerts.database`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Final, Protocol

from dessert_mcp.alerts.rules import Alert, Thresholds

# Alerts `recent` returns at most, newest first.
RECENT_KEPT: Final = 50


class AlertStore(Protocol):
    """Every account's alerts and its own thresholds. All methods are safe to call concurrently, from several
    processes sharing the store too: of two firing the same alert, or clearing it, exactly one is told it did."""

    async def fire(self, alert: Alert) -> bool:
        """Keep `alert`; False when it is kept already (its id) or its account has its rule active and uncleared
        (another replica fired it first)."""
        ...

    async def clear(self, alert: Alert) -> bool:
        """Set the stored alert's `cleared_at` to `alert.cleared_at`; False when it was cleared already."""
        ...

    async def recent(self, account: str, limit: int = RECENT_KEPT) -> list[Alert]:
        """The account's alerts, newest first (active and cleared)."""
        ...

    async def thresholds(self, account: str) -> Thresholds | None:
        """The thresholds the account's user set; None: the server's defaults."""
        ...

    async def set_thresholds(self, account: str, thresholds: Thresholds) -> None: ...


class InMemoryAlertStore:
    """`AlertStore` for the life of the process."""

    def __init__(self) -> None:
        self._alerts: defaultdict[str, list[Alert]] = defaultdict(list)
        self._thresholds: dict[str, Thresholds] = {}

    async def fire(self, alert: Alert) -> bool:
        kept = self._alerts[alert.account]
        level = alert.cleared_at is None
        if any(a.id == alert.id or (level and a.rule == alert.rule and a.cleared_at is None) for a in kept):
            return False
        kept.append(alert)
        # Active ones are always kept; cleared ones beyond RECENT_KEPT go.
        while len(kept) > RECENT_KEPT and (old := next((a for a in kept if a.cleared_at is not None), None)):
            kept.remove(old)
        return True

    async def clear(self, alert: Alert) -> bool:
        kept = self._alerts[alert.account]
        for i, stored in enumerate(kept):
            if stored.id == alert.id and stored.cleared_at is None:
                kept[i] = replace(stored, cleared_at=alert.cleared_at)
                return True
        return False

    async def recent(self, account: str, limit: int = RECENT_KEPT) -> list[Alert]:
        return sorted(self._alerts.get(account, ()), key=_newest_first)[:limit]

    async def thresholds(self, account: str) -> Thresholds | None:
        return self._thresholds.get(account)

    async def set_thresholds(self, account: str, thresholds: Thresholds) -> None:
        self._thresholds[account] = thresholds


class OpenedAlertStore:
    """`AlertStore` opened on first use by `open_store` (the ledger's database: a server never called loads no
    database library)."""

    def __init__(self, open_store: Callable[[], Awaitable[AlertStore]]) -> None:
        self._open = open_store
        self._store: AlertStore | None = None

    async def opened(self) -> AlertStore:
        if self._store is None:
            self._store = await self._open()
        return self._store

    async def fire(self, alert: Alert) -> bool:
        return await (await self.opened()).fire(alert)

    async def clear(self, alert: Alert) -> bool:
        return await (await self.opened()).clear(alert)

    async def recent(self, account: str, limit: int = RECENT_KEPT) -> list[Alert]:
        return await (await self.opened()).recent(account, limit)

    async def thresholds(self, account: str) -> Thresholds | None:
        return await (await self.opened()).thresholds(account)

    async def set_thresholds(self, account: str, thresholds: Thresholds) -> None:
        await (await self.opened()).set_thresholds(account, thresholds)


def _newest_first(alert: Alert) -> tuple[float, str]:
    return (-alert.fired_at.timestamp(), alert.id)


def active(alerts: list[Alert], now: datetime) -> list[Alert]:
    return [a for a in alerts if a.active(now)]
