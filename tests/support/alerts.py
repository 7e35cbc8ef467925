"""Alert stores for tests."""

from __future__ import annotations

from dessert_mcp.alerts import Alert, InMemoryAlertStore, Thresholds


class CountingStore(InMemoryAlertStore):
    """Alerts in memory, counting the reads that would be queries in the database."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def recent(self, account: str, limit: int = 50) -> list[Alert]:
        self.reads += 1
        return await super().recent(account, limit)

    async def thresholds(self, account: str) -> Thresholds | None:
        self.reads += 1
        return await super().thresholds(account)
