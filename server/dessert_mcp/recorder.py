"""Keeping what the tools see: every usage and balance answer handed to the ledger, off the call's path.

A call never waits for a ledger write and never fails because of the ledger. Writes go into a queue that one task
drains for as long as the service runs; reads (history beyond the API's window, spend, the forecast) are bounded in
time. An answer equal to the last one queued in its series (the same account's balance, or usage window) is a
repeat: it says again, at a later time, what the ledger was last given, so it is not queued but held back, the
newest repeat replacing the one before, and written `REPEAT_WAIT_S` after the first (or before a read that needs it,
before the series' next change, at the stop): one transaction a second for a run of equal answers instead of one per
call. A changed answer is queued at once.

A write or read that fails (the database full, read-only, locked or gone) is counted (`Observer.ledger_failed`) and
logged once, not per call, until the ledger works again; the call answers from the API's own answer instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from dessert_mcp.heap import keep_first_use_heap
from dessert_mcp.telemetry import Observer

if TYPE_CHECKING:  # the ledger loads on first use; the alerts wing imports history, which imports this module
    from dessert_mcp.alerts.store import AlertStore
    from dessert_mcp.ledger import Ledger

logger = logging.getLogger("dessert_mcp")

# Writes waiting for the ledger; beyond this a write is dropped (and counted) rather than make a call wait.
QUEUE_SIZE: Final = 1024
# How long a read waits for the ledger (after the writes queued before it) before the call answers without it.
READ_WAIT_S: Final = 5.0
# How long a stopping server lets queued writes finish.
DRAIN_WAIT_S: Final = 2.0
# How long the newest repeat of a series' last answer waits before it is written (a read or the stop writes it now).
REPEAT_WAIT_S: Final = 1.0
# Series whose last answer is remembered (one per account and kind); the least recently queued are forgotten first.
SERIES_KEPT: Final = 1024

T = TypeVar("T")
Write = Callable[["Ledger"], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Queued:
    """A write, and what makes a later one a repeat of it: the same `series` (kind and account) and an equal
    `value` (the answer). No series: never a repeat. `WAKE` and markers (`reached`: set when the drain gets to it)
    are the drain's own signals."""

    operation: str
    write: Write
    series: Hashable | None = None
    value: object = None
    reached: anyio.Event | None = None


async def _nothing(_ledger: Ledger) -> None:
    return None


_NONE: Final = object()  # no value queued yet in a series


# A repeat was held back while none was: the drain, maybe waiting with no deadline, has one now.
WAKE: Final = Queued("wake", _nothing)


class Recorder:
    """The ledger as the tools use it: fire-and-forget writes, bounded reads, failures counted and logged once."""

    def __init__(
        self,
        open_ledger: Callable[[], Ledger],
        observer: Observer,
        *,
        watched: Callable[[Ledger], Ledger] | None = None,
    ) -> None:
        """`open_ledger` runs in a worker thread; `watched` (what judges every change it keeps) wraps its ledger on
        the event loop."""
        self._open = open_ledger
        self._watched = watched
        self._ledger: Ledger | None = None
        self._observer = observer
        self._send: MemoryObjectSendStream[Queued] | None = None
        self._pending = 0
        self._settled = anyio.Event()
        self._settled.set()
        self._warned: set[str] = set()  # "write", "read": warned about, and not working since
        self._last: OrderedDict[Hashable, object] = OrderedDict()  # series: the value last queued
        self._held: dict[Hashable, tuple[float, Queued]] = {}  # series: (when due, its newest repeat)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Drain the write queue while the block runs; at its end, let queued writes finish (bounded)."""
        send, receive = anyio.create_memory_object_stream[Queued](QUEUE_SIZE)
        self._pending = 0
        self._settled.set()
        self._last.clear()
        self._held.clear()
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
                        if self._ledger is not None:
                            await self._ledger.aclose()  # reopened on next use, should the service run again
                    except Exception as exc:  # a database already gone: nothing left to close
                        logger.debug("Closing the ledger: %s", _reason(exc))

    def write(self, operation: str, write: Write, *, series: Hashable | None = None, value: object = None) -> None:
        """Queue `write`; never blocks. Outside `running()` (a server stopping) or with the queue full it is dropped.

        With a `series`, a write whose `value` equals the last one queued in that series is a repeat, held back (see
        the module's docstring): `write` must then do no more than the last one did, at a later time."""
        item = Queued(operation, write, series, value)
        if series is not None and self._send is not None:
            last = self._last.get(series, _NONE)
            if last is value or last == value:
                self._last.move_to_end(series)
                held = self._held.get(series)
                if held is not None:
                    self._held[series] = (held[0], item)  # the older repeat says nothing the newer one does not
                else:
                    if not self._held:  # later ones are due later: the drain wakes for the first anyway
                        self._signal(WAKE)
                    self._held[series] = (anyio.current_time() + REPEAT_WAIT_S, item)
                    self._started()
                return
            held = self._held.pop(series, None)
            if held is not None:  # its repeats came before this change
                self._queue(held[1], counted=True)
            self._last[series] = value
            self._last.move_to_end(series)
            if len(self._last) > SERIES_KEPT:
                self._last.popitem(last=False)
        self._queue(item, counted=False)

    def _queue(self, item: Queued, *, counted: bool) -> None:
        try:
            if self._send is None:
                raise anyio.WouldBlock
            self._send.send_nowait(item)
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            self._failed(item.operation, "the ledger's write queue is full or closed")
            if item.series is not None:
                self._last.pop(item.series, None)  # not kept: the next equal answer is queued, not held back
            if counted:
                self._done()
            return
        if not counted:
            self._started()

    def _signal(self, signal: Queued) -> None:
        """Send the drain `signal`; with the queue full it is busy already and sees the held repeats when due."""
        if self._send is not None:
            with suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                self._send.send_nowait(signal)

    def _started(self) -> None:
        if self._pending == 0:
            self._settled = anyio.Event()
        self._pending += 1

    def _done(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._settled.set()

    async def read(
        self,
        read: Callable[[Ledger], Awaitable[T]],
        *,
        after_writes: bool = True,
        passes: tuple[type[Exception], ...] = (),
    ) -> T | None:
        """`read(ledger)`, once the writes queued so far are done (`after_writes`); None when the ledger fails or
        takes too long, or while its writes fail (it lacks what calls just saw; and a SQLite file gone read-only can
        fault a reader). Exceptions of the `passes` types are the caller's (a cursor the ledger refuses): raised."""
        if not self.writing:
            return None
        with anyio.move_on_after(READ_WAIT_S):
            try:
                if after_writes:
                    await self.settled()
                    if not self.writing:  # the writes it waited for failed
                        return None
                answer = await read(await self.opened())
            except passes:
                raise
            except Exception as exc:  # whatever the database raises: the call goes on without the ledger
                self._failed("read", _reason(exc))
                return None
            self._working("read")
            return answer
        self._failed("read", f"no answer within {READ_WAIT_S:g} s")
        return None

    async def opened(self) -> Ledger:
        """The ledger, opened on first use (a server that is never called loads no database library), in a worker
        thread: importing the database libraries takes long enough to hold up the calls sharing the event loop."""
        if self._ledger is None:
            ledger = await anyio.to_thread.run_sync(self._open)
            if self._ledger is None:
                self._ledger = ledger if self._watched is None else self._watched(ledger)
        return self._ledger

    @property
    def writing(self) -> bool:
        """False while writes fail: the ledger then lacks the answers calls just had."""
        return "write" not in self._warned

    async def settled(self) -> None:
        """Wait until every write handed over so far is done (or dropped), held-back repeats included: they are queued
        now, then a marker the drain reaches once all that came before it is done. With the queue too full for that,
        until nothing at all is pending (the held repeats then follow when due)."""
        if self._pending == 0:
            return
        reached = anyio.Event()
        send = self._send
        if send is not None and send.statistics().current_buffer_used + len(self._held) < QUEUE_SIZE:
            for _, repeat in self._held.values():  # each queued ahead of any later change in its series
                send.send_nowait(repeat)
            self._held.clear()
            send.send_nowait(Queued("marker", _nothing, reached=reached))
            await reached.wait()
        else:
            await self._settled.wait()

    async def _drain(self, receive: ObjectReceiveStream[Queued]) -> None:
        held = self._held
        async with receive:
            while True:
                item: Queued | None = None
                try:
                    if held:
                        with anyio.move_on_after(min(when for when, _ in held.values()) - anyio.current_time()):
                            item = await receive.receive()
                    else:
                        item = await receive.receive()
                except anyio.EndOfStream:  # stopping: nothing is handed over any more
                    await self._run_all([repeat for _, repeat in held.values()])
                    held.clear()
                    return
                if item is None:  # the repeats due: taken out before any is written (a call may add or take some)
                    now = anyio.current_time()
                    due = [series for series, (when, _) in held.items() if when <= now]
                    await self._run_all([held.pop(series)[1] for series in due])
                elif item.reached is not None:
                    item.reached.set()
                elif item is not WAKE:
                    await self._run(item)

    async def _run_all(self, items: list[Queued]) -> None:
        for item in items:
            await self._run(item)

    async def _run(self, item: Queued) -> None:
        try:
            await item.write(await self.opened())
        except Exception as exc:  # whatever the database raises: counted, logged once, the call long gone
            self._failed(item.operation, _reason(exc))
        else:
            self._working("write")
        finally:
            self._done()

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
        keep_first_use_heap()  # the database libraries just loaded live as long as the process
        if kind in self._warned:
            self._warned.discard(kind)
            logger.info("The ledger's %ss work again.", kind)


def ledger_url() -> str:
    """Where the ledger lives: DESSERT_MCP_DATABASE_URL, else a SQLite file in the user's data directory."""
    from dessert_mcp.auth.config import OAuthConfig
    from dessert_mcp.config import declared
    from dessert_mcp.ledger.tables import default_ledger_url

    return declared(OAuthConfig)["database_url"].value(os.environ) or default_ledger_url()


def open_ledger() -> Ledger:
    """The ledger in its database (see `ledger_url` and `open_stores`)."""
    return open_stores()[0]


def open_stores() -> tuple[Ledger, AlertStore]:
    """The ledger and the alerts, in one database (see `ledger_url`)."""
    from dessert_mcp.alerts.database import ALERTS_SCHEMA, DatabaseAlertStore
    from dessert_mcp.ledger.database import DatabaseLedger
    from dessert_mcp.ledger.tables import LEDGER_SCHEMA
    from dessert_mcp.storage import Database

    database = Database(ledger_url(), schemas=[LEDGER_SCHEMA, ALERTS_SCHEMA], label="ledger database")
    return DatabaseLedger(database), DatabaseAlertStore(database)


class Stores:
    """The ledger and the alert store of one database, opened together on the first use of either, once (the
    recorder opens the ledger in a worker thread, a call may need the alerts first)."""

    def __init__(self, open_both: Callable[[], tuple[Ledger, AlertStore]] = open_stores) -> None:
        self._open = open_both
        self._lock = threading.Lock()
        self._opened: tuple[Ledger, AlertStore] | None = None

    def opened(self) -> tuple[Ledger, AlertStore]:
        with self._lock:
            if self._opened is None:
                self._opened = self._open()
            return self._opened

    def ledger(self) -> Ledger:
        return self.opened()[0]

    async def alerts(self) -> AlertStore:
        """The alert store, opened in a worker thread like the ledger (importing the database libraries is slow)."""
        return (await anyio.to_thread.run_sync(self.opened))[1]


def _reason(exc: Exception) -> str:
    """The failure's type and first line (a database error's later lines repeat the statement and its values)."""
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
