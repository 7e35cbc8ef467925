"""Keeping what the tools see: every usage and balance answer handed to the ledger, off the call's path.

A call never waits for a ledger write and never fails because of the ledger. Writes go into a queue that one task
drains for as long as the service runs; reads (history beyond the API's window, spend, the forecast) are bounded in
time. A write or read that fails (the database full, read-only, locked or gone) is counted
(`Observer.ledger_failed`) and logged once, not per call, until the ledger works again; the call answers from the
API's own answer instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from dessert_mcp.ledger import InMemoryLedger, Ledger
from dessert_mcp.telemetry import Observer

logger = logging.getLogger("dessert_mcp")

# Writes waiting for the ledger; beyond this a write is dropped (and counted) rather than make a call wait.
QUEUE_SIZE: Final = 1024
# How long a read waits for the ledger (after the writes queued before it) before the call answers without it.
READ_WAIT_S: Final = 5.0
# How long a stopping server lets queued writes finish.
DRAIN_WAIT_S: Final = 5.0

T = TypeVar("T")
Write = Callable[[Ledger], Awaitable[object]]
Queued = tuple[str, Write]


class Recorder:
    """The ledger as the tools use it: fire-and-forget writes, bounded reads, failures counted and logged once."""

    def __init__(self, ledger: Ledger, observer: Observer) -> None:
        self.ledger = ledger
        self._observer = observer
        self._send: MemoryObjectSendStream[Queued] | None = None
        self._pending = 0
        self._settled = anyio.Event()
        self._settled.set()
        self._warned: set[str] = set()  # "write", "read": warned about, and not working since

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Drain the write queue while the block runs; at its end, let queued writes finish (bounded)."""
        send, receive = anyio.create_memory_object_stream[Queued](QUEUE_SIZE)
        self._pending = 0
        self._settled.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain, receive)
            self._send = send
            try:
                yield
            finally:
                self._send = None
                send.close()
                with anyio.move_on_after(DRAIN_WAIT_S, shield=True):
                    await self._settled.wait()
                tg.cancel_scope.cancel()
                with anyio.move_on_after(DRAIN_WAIT_S, shield=True):
                    try:
                        await self.ledger.aclose()  # reopened on next use, should the service run again
                    except Exception as exc:  # a database already gone: nothing left to close
                        logger.debug("Closing the ledger: %s", _reason(exc))

    def write(self, operation: str, write: Write) -> None:
        """Queue `write`; never blocks. Outside `running()` (a server stopping) or with the queue full it is dropped."""
        try:
            if self._send is None:
                raise anyio.WouldBlock
            self._send.send_nowait((operation, write))
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            self._failed(operation, "the ledger's write queue is full or closed")
            return
        if self._pending == 0:
            self._settled = anyio.Event()
        self._pending += 1

    async def read(
        self,
        read: Callable[[Ledger], Awaitable[T]],
        *,
        after_writes: bool = True,
        passes: tuple[type[Exception], ...] = (),
    ) -> T | None:
        """`read(ledger)`, once the writes queued so far are done (`after_writes`); None when the ledger fails or
        takes too long. Exceptions of the `passes` types are the caller's (a cursor the ledger refuses): raised."""
        with anyio.move_on_after(READ_WAIT_S):
            try:
                if after_writes:
                    await self._settled.wait()
                answer = await read(self.ledger)
            except passes:
                raise
            except Exception as exc:  # whatever the database raises: the call goes on without the ledger
                self._failed("read", _reason(exc))
                return None
            self._working("read")
            return answer
        self._failed("read", f"no answer within {READ_WAIT_S:g} s")
        return None

    @property
    def writing(self) -> bool:
        """False while writes fail: the ledger then lacks the answers calls just had."""
        return "write" not in self._warned

    async def settled(self) -> None:
        """Wait until every write queued so far is done (or dropped)."""
        await self._settled.wait()

    async def _drain(self, receive: ObjectReceiveStream[Queued]) -> None:
        async with receive:
            async for operation, write in receive:
                try:
                    await write(self.ledger)
                except Exception as exc:  # whatever the database raises: counted, logged once, the call long gone
                    self._failed(operation, _reason(exc))
                else:
                    self._working("write")
                finally:
                    self._pending -= 1
                    if self._pending == 0:
                        self._settled.set()

    def _failed(self, operation: str, reason: str) -> None:
        self._observer.ledger_failed(operation)
        kind = "read" if operation == "read" else "write"
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(
                "The ledger failed (%s: %s); calls answer from the Dessert API alone while it fails. "
                "Set DESSERT_LEDGER=off to stop keeping history.",
                operation,
                reason,
            )

    def _working(self, kind: str) -> None:
        if kind in self._warned:
            self._warned.discard(kind)
            logger.info("The ledger's %ss work again.", kind)


def open_ledger() -> Ledger:
    """The ledger in a SQLite file in the user's data directory. Without the storage libraries (installed with the
    `remote` extra) the ledger is the in-process one: history kept for the life of the process."""
    try:
        from dessert_mcp.ledger.database import DatabaseLedger
        from dessert_mcp.ledger.tables import LEDGER_SCHEMA, default_ledger_url
        from dessert_mcp.storage import Database
    except ImportError:
        logger.info("The ledger keeps history in memory only: its database needs dessert-mcp[remote].")
        return InMemoryLedger()
    database = Database(default_ledger_url(), schemas=[LEDGER_SCHEMA], label="ledger database")
    return DatabaseLedger(database)


def _reason(exc: Exception) -> str:
    """The failure's type and first line (a database error's later lines repeat the statement and its values)."""
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
