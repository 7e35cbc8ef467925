"""One database: its engine and pool, its transactions, its migrations, and its faults turned into one error.

SQLAlchemy 2 Core over asyncio: a SQLite file (aiosqlite) by default, PostgreSQL (asyncpg) for replicas. Each wing
that keeps state passes its `Schema`; the tables of the storage layer itself (leases) come with every database.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from dessert_mcp.storage import leases
from dessert_mcp.storage.schema import Schema
from dessert_mcp.storage.urls import describe_database_url, normalize_database_url, sqlite_file

Clock = Callable[[], float]

logger = logging.getLogger("dessert_mcp.storage")

# Connections (and so aiosqlite threads) to a SQLite file; readers run side by side (a commit waits for them).
SQLITE_POOL_SIZE: Final = 5
# How long a SQLite statement waits for another process's lock (a writer, or readers a commit waits for) before failing.
SQLITE_BUSY_TIMEOUT_S = 15.0
# A rollback journal, truncated at each commit, and no memory mapping: see `Database._sqlite_connected`.
SQLITE_JOURNAL_MODE: Final = "truncate"
_SQLITE_COMPANIONS: Final = ("-journal", "-wal", "-shm")
_PG_MIGRATION_LOCK: Final = 0x64657373  # "dess": one advisory lock id for every wing's migrations

_FILE_ADVICE: Final = {
    "database_read_only": "Make the files writable again; service resumes by itself.",
    "database_file_gone": (
        "What was written since it was opened is only in the deleted copy: stop the server, put a backup back in "
        "place (or let it start afresh), then start it."
    ),
}
_CONNECTION_ERRORS: Final = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError)


class StorageUnavailable(Exception):
    """The database could not be reached or answered with a connection-level failure; try again shortly.

    `reason` is the code `/readyz` gives: `database_unavailable`, or for a SQLite file `database_read_only` (it
    cannot be written) or `database_file_gone` (deleted or replaced under the running server).
    """

    def __init__(self, message: str, reason: str = "database_unavailable") -> None:
        super().__init__(message)
        self.reason = reason


def engine_options(url: str) -> dict[str, Any]:
    """create_async_engine's keyword arguments for a normalised URL."""
    # Parameters (sealed keys, token hashes) stay out of SQLAlchemy's statement logs and error messages.
    if not url.startswith("sqlite"):
        # A server connection can die between requests; a stopped database must fail a request in seconds, not
        # after asyncpg's 60 s default.
        return {
            "hide_parameters": True,
            "pool_pre_ping": True,
            "connect_args": {"timeout": 5, "command_timeout": 10},
            "pool_size": 10,
            "max_overflow": 10,
            "pool_timeout": 10,
        }
    options: dict[str, Any] = {"hide_parameters": True, "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if sqlite_file(url):
        # Each aiosqlite connection is a thread of its own. SQLAlchemy 2.0 gives a file a NullPool (a new connection
        # per use) and 2.1 a pool whose overflow connections close as soon as they are returned: either way a burst
        # of reads starts and stops threads and reopens the file. A fixed pool keeps five, and a burst queues for
        # them (a read takes about a millisecond).
        options.update(poolclass=AsyncAdaptedQueuePool, pool_size=SQLITE_POOL_SIZE, max_overflow=0)
    return options


class Database:
    """One database URL, the wings' schemas in it, and the one way to use it: `transaction()`.

    The engine opens on first use, and the schemas are brought up to date on the first transaction (one process at
    a time: under SQLite's write lock or a PostgreSQL advisory lock). `label` names the database in
    messages ("token database"); `when_down` says what its users see meanwhile, for the log.
    """

    def __init__(
        self,
        url: str,
        *,
        schemas: Sequence[Schema] = (),
        label: str = "database",
        when_down: str = "",
        clock: Clock = time.time,
    ) -> None:
        self.url = normalize_database_url(url)
        self.schemas = (leases.STORAGE_SCHEMA, *schemas)
        self.label = label
        self.when_down = when_down
        self.clock = clock
        self.is_sqlite = self.url.startswith("sqlite")
        self.path = sqlite_file(self.url)
        self._engine: AsyncEngine | None = None
        # The SQLite file's (device, inode) when the engine opened it, to tell when it is deleted or replaced.
        self._file_id: tuple[int, int] | None = None
        self._file_problem: str | None = None  # what was last said about it, so it is said once
        self._writes_failing = False
        self._wal_kept = False  # said that the file stays in WAL mode (another process holds it so)
        self._ready = False
        self._lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        return f"Database({describe_database_url(self.url)!r})"

    @property
    def where(self) -> str:
        """Where the data is, for people: the file, or the URL without its password."""
        return self.path or describe_database_url(self.url)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            if self.path:
                path = Path(self.path)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not path.exists():
                    path.touch(mode=0o600)
            self._engine = create_async_engine(self.url, **engine_options(self.url))
            if self.path:
                sa.event.listen(self._engine.sync_engine, "connect", self._sqlite_connected)
                found = os.stat(self.path)
                self._file_id = (found.st_dev, found.st_ino)
        return self._engine

    def _sqlite_connected(self, dbapi_connection: Any, _record: Any) -> None:
        """Each new connection to the SQLite file: a rollback journal (`SQLITE_JOURNAL_MODE`), never memory-mapped.

        In WAL mode SQLite maps `<file>-shm` into memory and writes to it on every transaction, reads included; once
        the file turned immutable (`chattr +i`) or its mount read-only, such a write killed the process with SIGBUS,
        a race no check before a transaction closes. WAL without that shared memory needs `locking_mode=EXCLUSIVE`,
        which shuts every other process out. A rollback journal maps nothing and still lets processes share the file
        (a commit waits for the readers of the moment, within the busy timeout); what it costs per commit,
        bench/ledger.py shows. Durability stays at SQLite's default (synchronous=FULL): a committed write (a
        revocation, a ledger row) survives a power cut. A file an earlier version left in WAL mode is switched back,
        which SQLite does only while no other connection has it open: until then it stays in WAL, and works.
        """
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA mmap_size=0")
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0] != "wal":
                cursor.execute(f"PRAGMA journal_mode={SQLITE_JOURNAL_MODE}")
                return
            # Another process holding the file in WAL mode is not waited for: the switch is tried again by the next
            # connection this process opens, and by the next process.
            cursor.execute("PRAGMA busy_timeout=0")
            try:
                cursor.execute(f"PRAGMA journal_mode={SQLITE_JOURNAL_MODE}")
                switched = cursor.fetchone()[0] != "wal"
            except Exception:  # "database is locked": another connection has it open in WAL mode
                switched = False
            finally:
                cursor.execute(f"PRAGMA busy_timeout={round(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if switched:
                logger.info("The %s %s left WAL mode for a rollback journal.", self.label, self.path)
            elif not self._wal_kept:
                self._wal_kept = True
                logger.warning(
                    "The %s %s stays in WAL mode: another process (an older dessert-mcp?) has it open. It switches "
                    "to a rollback journal at a start with no other process using it.",
                    self.label,
                    self.path,
                )
        finally:
            cursor.close()

    def _unreachable(self, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"The {self.label} ({describe_database_url(self.url)}) is unreachable: {type(exc).__name__}."
        )

    def check_file(self) -> None:
        """Refuse to touch a SQLite file that was deleted, replaced or made unwritable since it was opened.

        An unwritable file would fail each write with an I/O error that does not say why. A deleted file keeps
        working into its unlinked inode, so everything written after is lost at the next restart. Both are caught
        here, before SQLite runs, and answered like a database that is down, with the reason `/readyz` gives.
        (Nothing here guards the process: no journal mode it uses maps the file, see `_sqlite_connected`.)
        """
        path = self.path
        if not path:
            return
        problem, reason = None, "database_read_only"
        try:
            found = os.stat(path)
        except FileNotFoundError:
            found = None  # not opened yet: opening creates it
        if self._file_id is not None and (found is None or (found.st_dev, found.st_ino) != self._file_id):
            problem, reason = f"{path} was deleted or replaced while in use", "database_file_gone"
        elif found is not None:
            unwritable = [p for p in (path, *(path + c for c in _SQLITE_COMPANIONS)) if not os.access(p, os.W_OK)]
            if any(os.path.exists(p) for p in unwritable):
                problem = f"{', '.join(unwritable)} cannot be written (immutable, read-only mount or permissions)"
        if problem != self._file_problem:
            self._file_problem = problem
            if problem is not None:
                consequence = f" ({self.when_down})" if self.when_down else ""
                logger.error(
                    "The %s %s: refusing to use it%s. %s", self.label, problem, consequence, _FILE_ADVICE[reason]
                )
            else:
                logger.warning("The %s file %s is usable again.", self.label, path)
        if problem is not None:
            raise StorageUnavailable(f"The {self.label} {problem}.", reason)

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; or, `read_only`, one connection for a single SELECT (atomic by itself): on PostgreSQL in
        autocommit, which spares the BEGIN and COMMIT round trips. Faults of the database raise StorageUnavailable.

        The file is checked before and again once a connection is held, just before the caller's first statement:
        waiting for the migration lock or a pooled connection leaves time for the file to turn unwritable."""
        self.check_file()
        if not self._ready:
            await self.migrate()
        try:
            if read_only:
                async with self.engine.connect() as conn:
                    self.check_file()
                    if not self.is_sqlite:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
            else:
                async with self.engine.begin() as conn:
                    self.check_file()
                    yield conn
                self._writes_failing = False
        except _CONNECTION_ERRORS as exc:
            self._writes_failing = self._writes_failing or not read_only
            raise self._unreachable(exc) from None
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageUnavailable(
                    f"The {self.label} ({describe_database_url(self.url)}) dropped the connection."
                ) from None
            raise

    async def migrate(self) -> dict[str, int]:
        """Bring every schema up to date; returns each one's version. Safe to call from several replicas."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if not self._ready:
                self.check_file()
                try:
                    async with self.engine.begin() as conn:
                        # Processes that start together (workers, replicas, a CLI command) migrate one at a time;
                        # the others then find the schema up to date. SQLite: take the write lock first.
                        if self.is_sqlite:
                            await conn.exec_driver_sql("BEGIN IMMEDIATE")
                        else:
                            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                        now = self.clock()
                        for schema in self.schemas:
                            await conn.run_sync(schema.upgrade, now)
                except _CONNECTION_ERRORS as exc:
                    raise self._unreachable(exc) from None
                self._ready = True
        return {schema.name: schema.version for schema in self.schemas}

    async def take_lease(self, name: str, holder: str, *, ttl_s: float, renew: bool = False) -> bool:
        """Take the lease `name` for `ttl_s` seconds if nobody holds it (or theirs has run out); True if taken.

        One statement, so two replicas asking at once cannot both get it. It runs out, so the work it guards happens
        at most once per `ttl_s` across all the replicas sharing the database. With `renew` its holder may take it
        again before then (work one replica keeps doing on its own schedule, such as polling an account, which others
        take over once it stops: once the lease runs out, or at once when its holder gives it up, `release_leases`).
        """
        async with self.transaction() as conn:
            return await leases.take(conn, name, holder, now=self.clock(), ttl_s=ttl_s, renew=renew)

    async def release_leases(self, names: Collection[str], holder: str) -> None:
        """Give up the leases `names` that `holder` holds before they run out (work it stops doing cleanly: another
        replica may take it at once)."""
        async with self.transaction() as conn:
            await leases.release(conn, names, holder)

    async def ping(self) -> None:
        """One round trip to the database; raises StorageUnavailable when it does not answer, or when the last
        write failed and a write still fails (reads can go on working on a full disk or a read-only file)."""
        async with self.transaction(read_only=True) as conn:
            await conn.execute(sa.text("SELECT 1"))
        if self._writes_failing:
            try:
                await self.take_lease("readyz", "readyz", ttl_s=0)
            except StorageUnavailable as exc:
                raise StorageUnavailable(str(exc), "database_read_only") from None

    async def aclose(self) -> None:
        if self._engine is not None and self._wal_kept:
            try:
                self.check_file()
            except StorageUnavailable as exc:
                # A file left in WAL mode is checkpointed on close through its mapped -shm: on an unwritable file,
                # SIGBUS. The process is ending; the kernel closes the files.
                if exc.reason == "database_read_only":
                    self._engine = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._ready = False
