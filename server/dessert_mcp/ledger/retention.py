"""The upkeep that deletes ledger rows older than DESSERT_LEDGER_RETENTION_DAYS (ledger.settings)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from dessert_mcp.ledger.api import Ledger
from dessert_mcp.storage.chores import Chore
from dessert_mcp.storage.database import Database

logger = logging.getLogger("dessert_mcp.ledger")

RETENTION_LEASE: Final = "ledger-retention"
# Old rows go within this long of passing the retention age, by one replica for all.
RETENTION_EVERY_S: Final = 3600.0


def retention_chore(
    db: Database,
    ledger: Ledger,
    days: int,
    *,
    clock: Callable[[], float] = time.time,
    every_s: float = RETENTION_EVERY_S,
) -> Chore[int]:
    """Delete rows and balance snapshots older than `days`, once per `every_s` across the replicas sharing `db`.
    Start it in the lifespan that owns the ledger (`chore.start()`, `await chore.aclose()`)."""

    async def prune() -> int:
        deleted = await ledger.prune(datetime.fromtimestamp(clock(), UTC) - timedelta(days=days))
        if deleted:
            logger.info("Deleted %d ledger rows older than %d days (DESSERT_LEDGER_RETENTION_DAYS)", deleted, days)
        return deleted

    return Chore(db, RETENTION_LEASE, prune, every_s=every_s, what="Ledger retention")
