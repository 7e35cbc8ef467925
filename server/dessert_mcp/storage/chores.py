"""Background upkeep (pruning, retention) that one replica does for all, under a lease in the shared database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from dessert_mcp.storage.database import Database, StorageUnavailable

T = TypeVar("T")

logger = logging.getLogger("dessert_mcp.storage")


def holder_name() -> str:
    """Names this process in a lease (for the operator reading the table); unique per process."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class Chore(Generic[T]):
    """`work` done at most once per `every_s` across every replica sharing `db`, whichever wakes first.

    chore = Chore(db, "prune", store.prune, every_s=3600, what="Pruning")
    chore.start()          # in the lifespan that owns the database; off every request's path
    await chore.aclose()   # at shutdown
    """

    def __init__(
        self, db: Database, lease: str, work: Callable[[], Awaitable[T]], *, every_s: float, what: str
    ) -> None:
        self.db = db
        self.lease = lease
        self.work = work
        self.every_s = every_s
        self.what = what
        self.holder = holder_name()
        self._task: asyncio.Task[None] | None = None

    async def once(self) -> T | None:
        """Do the work if no replica has in the last `every_s`; its result, or None if it was not our turn."""
        if not await self.db.take_lease(self.lease, self.holder, ttl_s=self.every_s):
            return None
        return await self.work()

    async def _forever(self) -> None:
        while True:
            try:
                await self.once()
            except StorageUnavailable as exc:
                logger.warning("%s skipped: %s", self.what, exc)
            except Exception:  # a bug here must not end the schedule, nor reach the server
                logger.exception("%s failed", self.what)
            await asyncio.sleep(self.every_s * random.uniform(0.5, 1.0))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever(), name=f"dessert-mcp {self.lease}")

    @property
    def running(self) -> bool:
        return self._task is not None

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
