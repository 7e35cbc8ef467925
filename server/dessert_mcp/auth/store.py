"""The auth wing's database: clients, pending sign-ins, codes, token families, linked accounts, throttles.

SQLAlchemy 2 Core over asyncio: a SQLite file by default (aiosqlite), PostgreSQL for replicas (asyncpg).
Everything a second replica needs lives here; the process keeps only the connection pool and, in the provider,
a seconds-long cache of verified access tokens (auth/tokencache.py) that revocations through this store evict.

Migrations are an ordered list of portable DDL in `_MIGRATIONS`, recorded in `schema_version`. The
server applies what is missing when it starts, under an advisory lock on PostgreSQL so replicas that
start together do not race. (Alembic would add a second entry point and an env.py for the same dozen
statements; the day the schema needs data migrations or autogenerate, switch to it.)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import anyio
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from dessert_mcp.auth._crypto import token_hash

Clock = Callable[[], float]

logger = logging.getLogger("dessert_mcp.auth")

# Connections (and so aiosqlite threads) to a SQLite file; readers run side by side in WAL mode.
SQLITE_POOL_SIZE: Final = 5
# How long a SQLite write waits for another writer (another worker, `accounts revoke`) before failing.
SQLITE_BUSY_TIMEOUT_S = 15.0


class RevocationListener(Protocol):
    def __call__(self, *, grant_id: str | None, account_id: str | None) -> None: ...


# Each entry: (version, statements). Types are the common subset of SQLite and PostgreSQL: TEXT, BIGINT,
# DOUBLE PRECISION. Ciphertexts are base64 text, so no BLOB/BYTEA split either.
_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE clients (
                client_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                info_json TEXT NOT NULL,
                secret_sealed TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION
            )""",
            """CREATE TABLE accounts (
                id TEXT PRIMARY KEY,
                key_hash TEXT NOT NULL UNIQUE,
                key_sealed TEXT NOT NULL,
                key_masked TEXT NOT NULL,
                key_fingerprint TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                linked_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION
            )""",
            """CREATE TABLE sign_ins (
                id_hash TEXT PRIMARY KEY,
                client_id TEXT NOT NULL,
                params_json TEXT NOT NULL,
                csrf_hash TEXT NOT NULL,
                key_sealed TEXT,
                account_json TEXT,
                expires_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION
            )""",
            """CREATE TABLE grants (
                id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL REFERENCES accounts(id),
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION,
                revoked_reason TEXT
            )""",
            "CREATE INDEX grants_account ON grants(account_id)",
            """CREATE TABLE authorization_codes (
                code_hash TEXT PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants(id),
                client_id TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                redirect_uri TEXT NOT NULL,
                redirect_uri_explicit BIGINT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION
            )""",
            """CREATE TABLE access_tokens (
                token_hash TEXT PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants(id),
                expires_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX access_tokens_grant ON access_tokens(grant_id)",
            """CREATE TABLE refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants(id),
                expires_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION
            )""",
            "CREATE INDEX refresh_tokens_grant ON refresh_tokens(grant_id)",
            """CREATE TABLE throttle (
                key TEXT PRIMARY KEY,
                window_start DOUBLE PRECISION NOT NULL,
                hits BIGINT NOT NULL
            )""",
        ),
    ),
    (
        2,
        (
            # Background work that one replica does for all (pruning): who holds it, and until when.
            """CREATE TABLE leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1][0]
_PG_MIGRATION_LOCK: Final = 0x64657373  # "dess": one advisory lock id for this schema

_md = sa.MetaData()
_clients = sa.Table(
    "clients",
    _md,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("info_json", sa.Text),
    sa.Column("secret_sealed", sa.Text),
    sa.Column("created_at", sa.Float),
    sa.Column("expires_at", sa.Float),
)
_accounts = sa.Table(
    "accounts",
    _md,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text),
    sa.Column("key_sealed", sa.Text),
    sa.Column("key_masked", sa.Text),
    sa.Column("key_fingerprint", sa.Text),
    sa.Column("created_at", sa.Float),
    sa.Column("linked_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
)
_sign_ins = sa.Table(
    "sign_ins",
    _md,
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text),
    sa.Column("params_json", sa.Text),
    sa.Column("csrf_hash", sa.Text),
    sa.Column("key_sealed", sa.Text),
    sa.Column("account_json", sa.Text),
    sa.Column("expires_at", sa.Float),
    sa.Column("used_at", sa.Float),
)
_grants = sa.Table(
    "grants",
    _md,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("client_id", sa.Text),
    sa.Column("scopes", sa.Text),
    sa.Column("resource", sa.Text),
    sa.Column("created_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("revoked_reason", sa.Text),
)
_codes = sa.Table(
    "authorization_codes",
    _md,
    sa.Column("code_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text),
    sa.Column("client_id", sa.Text),
    sa.Column("code_challenge", sa.Text),
    sa.Column("redirect_uri", sa.Text),
    sa.Column("redirect_uri_explicit", sa.BigInteger),
    sa.Column("expires_at", sa.Float),
    sa.Column("used_at", sa.Float),
)
_access = sa.Table(
    "access_tokens",
    _md,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text),
    sa.Column("expires_at", sa.Float),
)
_refresh = sa.Table(
    "refresh_tokens",
    _md,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text),
    sa.Column("expires_at", sa.Float),
    sa.Column("used_at", sa.Float),
)
_throttle = sa.Table(
    "throttle",
    _md,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Float),
    sa.Column("hits", sa.BigInteger),
)

_leases = sa.Table(
    "leases",
    _md,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text),
    sa.Column("expires_at", sa.Float),
)
# A registered client that no grant has used for this long is abandoned (a sign-in takes minutes; a refresh token
# lives 30 days by default), and goes at the next prune.
ABANDONED_CLIENT_S: Final = 30 * 24 * 3600


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    # Write-ahead logging: readers (every token check) never wait for a writer (a sign-in, a refresh), nor it for
    # them. Durability stays at SQLite's default (synchronous=FULL): a committed revocation survives a power cut.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


# Every MCP request's check (when not in the token cache): built once; SQLAlchemy reuses its compiled form.
_ACCESS_CHECK: Final = (
    sa.select(
        _access.c.grant_id,
        _access.c.expires_at,
        _grants.c.client_id,
        _grants.c.account_id,
        _grants.c.scopes,
        _grants.c.resource,
        _accounts.c.key_sealed,
    )
    .join(_grants, _grants.c.id == _access.c.grant_id)
    .join(_accounts, _accounts.c.id == _grants.c.account_id)
    .where(
        _access.c.token_hash == sa.bindparam("token_hash"),
        _access.c.expires_at > sa.bindparam("now"),
        _grants.c.revoked_at.is_(None),
        _accounts.c.revoked_at.is_(None),
    )
)


# Expired metadata-document clients stay this long (a sign-in in progress may still read one), then go.
_CIMD_GRACE_S: Final = 3600


def _expired_cimd_clients(cutoff: float) -> sa.Delete:
    return _clients.delete().where(_clients.c.kind == "cimd", _clients.c.expires_at < cutoff)


_FILE_ADVICE: Final = {
    "database_read_only": "Make the files writable again; service resumes by itself.",
    "database_file_gone": (
        "Grants written since it was opened are only in the deleted copy: stop the server, put a backup back in "
        "place (or let it start afresh, and everyone signs in again), then start it."
    ),
}


class StorageUnavailable(Exception):
    """The database could not be reached or answered with a connection-level failure; try again shortly.

    `reason` is the code `/readyz` gives: `database_unavailable`, or for a SQLite file `database_read_only` (it
    cannot be written) or `database_file_gone` (deleted or replaced under the running server).
    """

    def __init__(self, message: str, reason: str = "database_unavailable") -> None:
        super().__init__(message)
        self.reason = reason


def default_database_url() -> str:
    """A SQLite file in the user's state directory (XDG_STATE_HOME, else ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return "sqlite+aiosqlite:///" + str(Path(base) / "dessert-mcp" / "auth.db")


def normalize_database_url(url: str) -> str:
    """Accept the URLs operators have (`postgresql://`, `postgres://`, `sqlite:///`) and pick the async driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DESSERT_MCP_DATABASE_URL must look like postgresql://user:pass@host/db or sqlite:///path")
    driver = {
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
    }.get(scheme.lower())
    if driver is None:
        raise ValueError(f"DESSERT_MCP_DATABASE_URL: unsupported database {scheme!r} (use postgresql or sqlite)")
    return f"{driver}://{rest}"


def describe_database_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    key_sealed: str
    key_masked: str
    key_fingerprint: str
    created_at: float
    linked_at: float
    revoked_at: float | None
    active_grants: int = 0


@dataclass(frozen=True, slots=True)
class CodeRow:
    grant_id: str
    client_id: str
    account_id: str
    scopes: list[str]
    resource: str
    code_challenge: str
    redirect_uri: str
    redirect_uri_explicit: bool
    expires_at: float
    used: bool


@dataclass(frozen=True, slots=True)
class TokenRow:
    """An access or refresh token joined with its family (grant) and account."""

    grant_id: str
    client_id: str
    account_id: str
    scopes: list[str]
    resource: str
    expires_at: float
    key_sealed: str
    used: bool = False


@dataclass(frozen=True, slots=True)
class SignInRow:
    client_id: str
    params: dict[str, Any]
    csrf_hash: str
    key_sealed: str | None
    account: dict[str, Any] | None
    expires_at: float
    used: bool = False


_CONNECTION_ERRORS: Final = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError)


class Store:
    """All reads and writes of the auth wing. Every method is one short transaction."""

    def __init__(self, url: str, *, clock: Clock = time.time) -> None:
        self.url = normalize_database_url(url)
        self.clock = clock
        self.is_sqlite = self.url.startswith("sqlite")
        # A server connection can die between requests; a SQLite file cannot, so it skips the extra round trip.
        # Parameters (sealed keys, token hashes) stay out of SQLAlchemy's statement logs and error messages.
        kwargs: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite, "hide_parameters": True}
        if self.is_sqlite:
            self._sqlite_path = self.url.split(":///", 1)[1] if ":///" in self.url else ""
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
            if self._sqlite_path not in ("", ":memory:"):
                # Each aiosqlite connection is a thread of its own. SQLAlchemy 2.0 gives a file a NullPool (a new
                # connection per use) and 2.1 a pool whose overflow connections close as soon as they are returned:
                # either way a burst of token checks starts and stops threads and reopens the file. A fixed pool
                # keeps five, and a burst queues for them (a read takes about a millisecond).
                kwargs["poolclass"] = AsyncAdaptedQueuePool
                kwargs["pool_size"] = SQLITE_POOL_SIZE
                kwargs["max_overflow"] = 0
        else:
            self._sqlite_path = ""
            # A stopped database must fail a request in seconds, not after asyncpg's 60 s default.
            kwargs["connect_args"] = {"timeout": 5, "command_timeout": 10}
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
            kwargs["pool_timeout"] = 10
        self._engine_kwargs = kwargs
        self._engine: AsyncEngine | None = None
        # The SQLite file's (device, inode) when the engine opened it, to tell when it is deleted or replaced.
        self._file_id: tuple[int, int] | None = None
        self._file_problem: str | None = None  # what was last said about it, so it is said once
        self._writes_failing = False
        self._ready = False
        self._lock: anyio.Lock | None = None
        self._revocation_listeners: list[RevocationListener] = []

    def __repr__(self) -> str:
        return f"Store({describe_database_url(self.url)!r})"

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            if self._sqlite_path and self._sqlite_path != ":memory:":
                path = Path(self._sqlite_path)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not path.exists():
                    path.touch(mode=0o600)
            self._engine = create_async_engine(self.url, **self._engine_kwargs)
            if self._sqlite_path and self._sqlite_path != ":memory:":
                sa.event.listen(self._engine.sync_engine, "connect", _sqlite_wal)
                found = os.stat(self._sqlite_path)
                self._file_id = (found.st_dev, found.st_ino)
        return self._engine

    def _check_file(self) -> None:
        """Refuse to touch a SQLite file that was deleted, replaced or made unwritable since it was opened.

        SQLite maps `auth.db-shm` into memory and writes to it on every transaction, reads included: once the
        file is immutable (`chattr +i`) or on a read-only mount, that write kills the process with SIGBUS. And a
        deleted file keeps working into its unlinked inode, so everything written after is lost at the next
        restart. Both are caught here, before SQLite runs, and answered like a database that is down.
        """
        path = self._sqlite_path
        if path in ("", ":memory:"):
            return
        problem, reason = None, "database_read_only"
        try:
            found = os.stat(path)
        except FileNotFoundError:
            found = None  # not opened yet: opening creates it
        if self._file_id is not None and (found is None or (found.st_dev, found.st_ino) != self._file_id):
            problem, reason = f"{path} was deleted or replaced while in use", "database_file_gone"
        elif found is not None:
            unwritable = [p for p in (path, path + "-wal", path + "-shm") if not os.access(p, os.W_OK)]
            if any(os.path.exists(p) for p in unwritable):
                problem = f"{', '.join(unwritable)} cannot be written (immutable, read-only mount or permissions)"
        if problem != self._file_problem:
            self._file_problem = problem
            if problem is not None:
                logger.error(
                    "The token database %s: refusing to use it (requests answer 503, /readyz is not ready). %s",
                    problem,
                    _FILE_ADVICE[reason],
                )
            else:
                logger.warning("The token database file %s is usable again.", path)
        if problem is not None:
            raise StorageUnavailable(f"The token database {problem}.", reason)

    def on_revocation(self, listener: RevocationListener) -> None:
        """Call `listener(grant_id=..., account_id=...)` after every revocation made through this store (and if it
        fails: forgetting too much is harmless), so caches of this process forget the revoked tokens at once."""
        self._revocation_listeners.append(listener)

    def _revoked(self, *, grant_id: str | None = None, account_id: str | None = None) -> None:
        for listener in self._revocation_listeners:
            listener(grant_id=grant_id, account_id=account_id)

    async def aclose(self) -> None:
        if self._engine is not None:
            try:
                self._check_file()
            except StorageUnavailable as exc:
                # Closing checkpoints the WAL through the mapped -shm: on an unwritable file, SIGBUS. The process is
                # ending; the kernel closes the files.
                if exc.reason == "database_read_only":
                    self._engine = None
            if self._engine is not None:
                await self._engine.dispose()
                self._engine = None
        self._ready = False

    @asynccontextmanager
    async def _tx(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; or, `read_only`, one connection for a single SELECT (atomic by itself): on PostgreSQL in
        autocommit, which spares the BEGIN and COMMIT round trips."""
        self._check_file()
        if not self._ready:
            await self.migrate()
        try:
            if read_only:
                async with self.engine.connect() as conn:
                    if not self.is_sqlite:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
            else:
                async with self.engine.begin() as conn:
                    yield conn
                self._writes_failing = False
        except _CONNECTION_ERRORS as exc:
            self._writes_failing = self._writes_failing or not read_only
            raise StorageUnavailable(
                f"The token database ({describe_database_url(self.url)}) is unreachable: {type(exc).__name__}."
            ) from None
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageUnavailable(
                    f"The token database ({describe_database_url(self.url)}) dropped the connection."
                ) from None
            raise

    # -- schema -------------------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply the missing migrations; returns the schema version. Safe to call from several replicas."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._ready:
                return SCHEMA_VERSION
            self._check_file()
            try:
                async with self.engine.begin() as conn:
                    if not self.is_sqlite:
                        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    await conn.execute(
                        sa.text(
                            "CREATE TABLE IF NOT EXISTS schema_version "
                            "(version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                        )
                    )
                    current = (await conn.execute(sa.text("SELECT MAX(version) FROM schema_version"))).scalar() or 0
                    if current > SCHEMA_VERSION:
                        raise RuntimeError(
                            f"the database schema is version {current}, newer than this dessert-mcp "
                            f"({SCHEMA_VERSION}); upgrade dessert-mcp"
                        )
                    for version, statements in _MIGRATIONS:
                        if version <= current:
                            continue
                        for statement in statements:
                            await conn.execute(sa.text(statement))
                        await conn.execute(
                            sa.text("INSERT INTO schema_version (version, applied_at) VALUES (:v, :t)"),
                            {"v": version, "t": self.clock()},
                        )
            except _CONNECTION_ERRORS as exc:
                raise StorageUnavailable(
                    f"The token database ({describe_database_url(self.url)}) is unreachable: {type(exc).__name__}."
                ) from None
            self._ready = True
            return SCHEMA_VERSION

    async def ping(self) -> None:
        """One round trip to the database; raises StorageUnavailable when it does not answer, or when the last
        write failed and a write still fails (reads can go on working on a full disk or a read-only file)."""
        async with self._tx(read_only=True) as conn:
            await conn.execute(sa.text("SELECT 1"))
        if self._writes_failing:
            try:
                await self.take_lease("readyz", "readyz", ttl_s=0)
            except StorageUnavailable as exc:
                raise StorageUnavailable(str(exc), "database_read_only") from None

    # -- clients ------------------------------------------------------------------------------------------

    async def put_client(
        self,
        client_id: str,
        *,
        kind: str,
        info: dict[str, Any],
        secret_sealed: str | None,
        expires_at: float | None = None,
    ) -> None:
        values = {
            "kind": kind,
            "info_json": json.dumps(info),
            "secret_sealed": secret_sealed,
            "created_at": self.clock(),
            "expires_at": expires_at,
        }
        async with self._tx() as conn:
            # A metadata-document client is a cache entry, never a permanent row: expired ones go as new ones come.
            await conn.execute(_expired_cimd_clients(self.clock() - _CIMD_GRACE_S))
            updated = await conn.execute(_clients.update().where(_clients.c.client_id == client_id).values(**values))
            if updated.rowcount == 0:
                await conn.execute(_clients.insert().values(client_id=client_id, **values))

    async def get_client(self, client_id: str) -> tuple[str, dict[str, Any], str | None, float | None] | None:
        """(kind, info, sealed secret, expires_at) or None."""
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(
                        _clients.c.kind, _clients.c.info_json, _clients.c.secret_sealed, _clients.c.expires_at
                    ).where(_clients.c.client_id == client_id)
                )
            ).first()
        if row is None:
            return None
        return row.kind, json.loads(row.info_json), row.secret_sealed, row.expires_at

    # -- sign-ins (between /authorize and the redirect back) ----------------------------------------------

    async def create_sign_in(
        self,
        sign_in_id: str,
        *,
        client_id: str,
        params: dict[str, Any],
        csrf: str,
        expires_at: float,
        key_sealed: str,
        account: dict[str, Any],
    ) -> bool:
        """Keep a sign-in whose key checked until consent (a key checked again replaces it); False if it was used.

        /authorize stores nothing (auth/pending.py): this row is the first a sign-in writes.
        """
        async with self._tx() as conn:
            # Opportunistic clean-up of abandoned sign-ins; the table stays small without a cron job.
            await conn.execute(_sign_ins.delete().where(_sign_ins.c.expires_at < self.clock() - 3600))
            result = await conn.execute(
                sa.text(
                    "INSERT INTO sign_ins (id_hash, client_id, params_json, csrf_hash, key_sealed, account_json, "
                    "expires_at) VALUES (:id, :client, :params, :csrf, :key, :account, :until) "
                    "ON CONFLICT (id_hash) DO UPDATE SET key_sealed = :key, account_json = :account "
                    "WHERE sign_ins.used_at IS NULL RETURNING id_hash"
                ),
                {
                    "id": token_hash(sign_in_id),
                    "client": client_id,
                    "params": json.dumps(params),
                    "csrf": token_hash(csrf),
                    "key": key_sealed,
                    "account": json.dumps(account),
                    "until": expires_at,
                },
            )
            return result.first() is not None

    async def get_sign_in(self, sign_in_id: str) -> SignInRow | None:
        """The sign-in if its key checked and it has not expired; `used` once consent was given or refused."""
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(_sign_ins).where(
                        _sign_ins.c.id_hash == token_hash(sign_in_id),
                        _sign_ins.c.expires_at > self.clock(),
                    )
                )
            ).first()
        if row is None:
            return None
        return SignInRow(
            client_id=row.client_id,
            params=json.loads(row.params_json),
            csrf_hash=row.csrf_hash,
            key_sealed=row.key_sealed,
            account=json.loads(row.account_json) if row.account_json else None,
            expires_at=row.expires_at,
            used=row.used_at is not None,
        )

    async def finish_sign_in(self, sign_in_id: str) -> bool:
        """Mark the sign-in used (and forget its key); False if it was already used: a double submit."""
        async with self._tx() as conn:
            result = await conn.execute(
                _sign_ins.update()
                .where(_sign_ins.c.id_hash == token_hash(sign_in_id), _sign_ins.c.used_at.is_(None))
                .values(used_at=self.clock(), key_sealed=None, account_json=None)
            )
        return bool(result.rowcount == 1)

    # -- accounts, grants, codes --------------------------------------------------------------------------

    async def link_account_and_issue_code(
        self,
        *,
        account_id: str,
        key_hash_value: str,
        seal: Callable[[str], str],
        key_masked: str,
        key_fingerprint: str,
        grant_id: str,
        client_id: str,
        scopes: Sequence[str],
        resource: str,
        code: str,
        code_challenge: str,
        redirect_uri: str,
        redirect_uri_explicit: bool,
        code_ttl_s: float,
    ) -> str:
        """Create or refresh the account for this key, open a grant (token family) and its code.

        `seal(account_id)` encrypts the key bound to the account id. Returns the account id used.
        """
        now = self.clock()
        async with self._tx() as conn:
            existing = (
                await conn.execute(sa.select(_accounts.c.id).where(_accounts.c.key_hash == key_hash_value))
            ).first()
            if existing is not None:
                account_id = existing.id
                await conn.execute(
                    _accounts.update()
                    .where(_accounts.c.id == account_id)
                    .values(key_sealed=seal(account_id), linked_at=now, revoked_at=None)
                )
            else:
                await conn.execute(
                    _accounts.insert().values(
                        id=account_id,
                        key_hash=key_hash_value,
                        key_sealed=seal(account_id),
                        key_masked=key_masked,
                        key_fingerprint=key_fingerprint,
                        created_at=now,
                        linked_at=now,
                    )
                )
            await conn.execute(
                _grants.insert().values(
                    id=grant_id,
                    account_id=account_id,
                    client_id=client_id,
                    scopes=" ".join(scopes),
                    resource=resource,
                    created_at=now,
                )
            )
            await conn.execute(
                _codes.insert().values(
                    code_hash=token_hash(code),
                    grant_id=grant_id,
                    client_id=client_id,
                    code_challenge=code_challenge,
                    redirect_uri=redirect_uri,
                    redirect_uri_explicit=int(redirect_uri_explicit),
                    expires_at=now + code_ttl_s,
                )
            )
        return account_id

    async def get_code(self, code: str) -> CodeRow | None:
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(_codes, _grants.c.account_id, _grants.c.scopes, _grants.c.resource)
                    .join(_grants, _grants.c.id == _codes.c.grant_id)
                    .where(_codes.c.code_hash == token_hash(code))
                )
            ).first()
        if row is None:
            return None
        return CodeRow(
            grant_id=row.grant_id,
            client_id=row.client_id,
            account_id=row.account_id,
            scopes=row.scopes.split(),
            resource=row.resource,
            code_challenge=row.code_challenge,
            redirect_uri=row.redirect_uri,
            redirect_uri_explicit=bool(row.redirect_uri_explicit),
            expires_at=row.expires_at,
            used=row.used_at is not None,
        )

    async def redeem_code(
        self, code: str, *, access: str, access_ttl_s: float, refresh: str, refresh_ttl_s: float
    ) -> bool:
        """Spend the code once and issue the family's first tokens; False if it was already spent."""
        now = self.clock()
        async with self._tx() as conn:
            spent = await conn.execute(
                _codes.update()
                .where(_codes.c.code_hash == token_hash(code), _codes.c.used_at.is_(None))
                .values(used_at=now)
                .returning(_codes.c.grant_id)
            )
            row = spent.first()
            if row is None:
                return False
            await self._issue(conn, row.grant_id, access, access_ttl_s, refresh, refresh_ttl_s, now)
        return True

    async def rotate_refresh(
        self, refresh_old: str, *, access: str, access_ttl_s: float, refresh: str, refresh_ttl_s: float
    ) -> bool:
        """Spend a refresh token once and issue the next pair in its family; False if it was already spent."""
        now = self.clock()
        async with self._tx() as conn:
            spent = await conn.execute(
                _refresh.update()
                .where(_refresh.c.token_hash == token_hash(refresh_old), _refresh.c.used_at.is_(None))
                .values(used_at=now)
                .returning(_refresh.c.grant_id)
            )
            row = spent.first()
            if row is None:
                return False
            await self._issue(conn, row.grant_id, access, access_ttl_s, refresh, refresh_ttl_s, now)
        return True

    @staticmethod
    async def _issue(
        conn: AsyncConnection,
        grant_id: str,
        access: str,
        access_ttl_s: float,
        refresh: str,
        refresh_ttl_s: float,
        now: float,
    ) -> None:
        await conn.execute(
            _access.insert().values(token_hash=token_hash(access), grant_id=grant_id, expires_at=now + access_ttl_s)
        )
        await conn.execute(
            _refresh.insert().values(token_hash=token_hash(refresh), grant_id=grant_id, expires_at=now + refresh_ttl_s)
        )

    def _token_query(self, table: sa.Table, token: str) -> sa.Select[Any]:
        return (
            sa.select(
                table,
                _grants.c.client_id,
                _grants.c.account_id,
                _grants.c.scopes,
                _grants.c.resource,
                _accounts.c.key_sealed,
            )
            .join(_grants, _grants.c.id == table.c.grant_id)
            .join(_accounts, _accounts.c.id == _grants.c.account_id)
            .where(
                table.c.token_hash == token_hash(token),
                _grants.c.revoked_at.is_(None),
                _accounts.c.revoked_at.is_(None),
            )
        )

    async def get_access_token(self, token: str) -> TokenRow | None:
        """The live access token (not expired, family and account not revoked), or None. One query, no transaction."""
        async with self._tx(read_only=True) as conn:
            row = (await conn.execute(_ACCESS_CHECK, {"token_hash": token_hash(token), "now": self.clock()})).first()
        if row is None:
            return None
        return TokenRow(
            grant_id=row.grant_id,
            client_id=row.client_id,
            account_id=row.account_id,
            scopes=row.scopes.split(),
            resource=row.resource,
            expires_at=row.expires_at,
            key_sealed=row.key_sealed,
        )

    async def get_refresh_token(self, token: str) -> TokenRow | None:
        """The refresh token if its family is live (expiry is checked by the caller); `used` marks a replay."""
        async with self._tx(read_only=True) as conn:
            row = (await conn.execute(self._token_query(_refresh, token))).first()
        if row is None:
            return None
        return TokenRow(
            grant_id=row.grant_id,
            client_id=row.client_id,
            account_id=row.account_id,
            scopes=row.scopes.split(),
            resource=row.resource,
            expires_at=row.expires_at,
            key_sealed=row.key_sealed,
            used=row.used_at is not None,
        )

    async def revoke_grant(self, grant_id: str, reason: str) -> None:
        try:
            async with self._tx() as conn:
                await conn.execute(
                    _grants.update()
                    .where(_grants.c.id == grant_id, _grants.c.revoked_at.is_(None))
                    .values(revoked_at=self.clock(), revoked_reason=reason)
                )
        finally:
            self._revoked(grant_id=grant_id)

    # -- operator commands --------------------------------------------------------------------------------

    async def list_accounts(self) -> list[AccountRow]:
        live = (
            sa.select(sa.func.count())
            .select_from(_grants)
            .where(_grants.c.account_id == _accounts.c.id, _grants.c.revoked_at.is_(None))
            .scalar_subquery()
        )
        async with self._tx(read_only=True) as conn:
            rows = (
                await conn.execute(sa.select(_accounts, live.label("active")).order_by(_accounts.c.created_at))
            ).all()
        return [
            AccountRow(
                id=r.id,
                key_sealed=r.key_sealed,
                key_masked=r.key_masked,
                key_fingerprint=r.key_fingerprint,
                created_at=r.created_at,
                linked_at=r.linked_at,
                revoked_at=r.revoked_at,
                active_grants=int(r.active),
            )
            for r in rows
        ]

    async def revoke_account(self, account_id: str) -> bool:
        """Unlink an account: every token of it stops working, in this process at once and in the others within
        their token cache's bound (`DESSERT_MCP_TOKEN_CACHE_S`). False if no such live account."""
        now = self.clock()
        try:
            async with self._tx() as conn:
                result = await conn.execute(
                    _accounts.update()
                    .where(_accounts.c.id == account_id, _accounts.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                await conn.execute(
                    _grants.update()
                    .where(_grants.c.account_id == account_id, _grants.c.revoked_at.is_(None))
                    .values(revoked_at=now, revoked_reason="account revoked by the operator")
                )
        finally:
            self._revoked(account_id=account_id)
        return bool(result.rowcount == 1)

    async def reseal_accounts(self, reseal: Callable[[str, str], str | None]) -> int:
        """Re-encrypt keys under the current encryption key; `reseal(account_id, sealed)` returns None to skip."""
        count = 0
        for account in await self.list_accounts():
            new = reseal(account.id, account.key_sealed)
            if new is None:
                continue
            async with self._tx() as conn:
                await conn.execute(_accounts.update().where(_accounts.c.id == account.id).values(key_sealed=new))
            count += 1
        return count

    async def prune(self, *, grace_s: float = 3600) -> int:
        """Delete rows past their expiry (plus `grace_s`); returns how many. Safe to run on any replica, any time.

        Used refresh tokens stay until they expire, so a replay is still recognised (and revokes its family). A grant
        goes once no token or code of it is left; a cached client document once it expires; a registered client once
        no grant uses it and it registered more than `ABANDONED_CLIENT_S` ago. Linked accounts stay (the operator's
        `accounts list`).
        """
        now = self.clock()
        cutoff = now - grace_s
        deleted = 0
        async with self._tx() as conn:
            for table in (_access, _refresh, _codes, _sign_ins):
                deleted += (await conn.execute(table.delete().where(table.c.expires_at < cutoff))).rowcount
            deleted += (await conn.execute(_throttle.delete().where(_throttle.c.window_start < cutoff))).rowcount
            used = [sa.exists().where(t.c.grant_id == _grants.c.id) for t in (_access, _refresh, _codes)]
            dead = _grants.delete().where(_grants.c.created_at < cutoff, *(sa.not_(u) for u in used))
            deleted += (await conn.execute(dead)).rowcount
            expired = _clients.c.expires_at.is_not(None) & (_clients.c.expires_at < cutoff)
            granted = sa.exists().where(_grants.c.client_id == _clients.c.client_id)
            abandoned = _clients.c.created_at < now - ABANDONED_CLIENT_S
            deleted += (await conn.execute(_clients.delete().where(expired | (abandoned & sa.not_(granted))))).rowcount
        return deleted

    async def take_lease(self, name: str, holder: str, *, ttl_s: float) -> bool:
        """Take the lease `name` for `ttl_s` seconds if nobody holds it (or theirs has run out); True if taken.

        One statement, so two replicas asking at once cannot both get it. It is not released: it runs out, so the
        work it guards happens at most once per `ttl_s` across all the replicas sharing the database.
        """
        now = self.clock()
        async with self._tx() as conn:
            result = await conn.execute(
                sa.text(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :until) "
                    "ON CONFLICT (name) DO UPDATE SET holder = :holder, expires_at = :until "
                    "WHERE leases.expires_at <= :now RETURNING holder"
                ),
                {"name": name, "holder": holder, "until": now + ttl_s, "now": now},
            )
            return result.first() is not None

    # -- throttles ----------------------------------------------------------------------------------------

    async def throttle_hit(self, key: str, *, window_s: float) -> int:
        """Count one event for `key` in a fixed window; returns the count in the current window."""
        now = self.clock()
        async with self._tx() as conn:
            result = await conn.execute(
                sa.text(
                    "INSERT INTO throttle (key, window_start, hits) VALUES (:k, :now, 1) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "hits = CASE WHEN throttle.window_start < :cutoff THEN 1 ELSE throttle.hits + 1 END, "
                    "window_start = CASE WHEN throttle.window_start < :cutoff THEN :now ELSE throttle.window_start END "
                    "RETURNING hits"
                ),
                {"k": key, "now": now, "cutoff": now - window_s},
            )
            return int(result.scalar_one())

    async def throttle_refund(self, key: str) -> None:
        """Take back one event counted by `throttle_hit` (the attempt it reserved turned out not to count)."""
        async with self._tx() as conn:
            await conn.execute(
                _throttle.update().where(_throttle.c.key == key, _throttle.c.hits > 0).values(hits=_throttle.c.hits - 1)
            )

    async def throttle_count(self, key: str, *, window_s: float) -> int:
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(_throttle.c.hits).where(
                        _throttle.c.key == key, _throttle.c.window_start >= self.clock() - window_s
                    )
                )
            ).first()
        return int(row.hits) if row is not None else 0
