"""Each wing's schema is declared once; its migrations bring a new database, and one made by an older release, to
exactly that declaration, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from dessert_mcp.auth.store import SCHEMA as AUTH_SCHEMA
from dessert_mcp.auth.store import Store
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.storage import Database, Migration, Schema
from dessert_mcp.storage.leases import STORAGE_SCHEMA
from tests.storage.schema_diff import differences

WINGS = [AUTH_SCHEMA, LEDGER_SCHEMA]

# The token database as the releases before the storage layer made it: their hand-written DDL, verbatim.
LEGACY_AUTH_DDL = (
    """CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)""",
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
    """CREATE TABLE throttle (key TEXT PRIMARY KEY, window_start DOUBLE PRECISION NOT NULL, hits BIGINT NOT NULL)""",
    """CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    "INSERT INTO schema_version (version, applied_at) VALUES (1, 0), (2, 0)",
)


async def _differences(db: Database, *schemas: Schema) -> list[str]:
    found: list[str] = []
    async with db.engine.connect() as conn:
        for schema in schemas:
            found += await conn.run_sync(differences, schema.metadata)
    return found


@pytest.mark.parametrize("schema", WINGS, ids=lambda s: s.name)
async def test_a_new_database_migrates_to_exactly_the_declared_schema(schema: Schema, database_url: str) -> None:
    db = Database(database_url, schemas=[schema])
    try:
        assert await db.migrate() == {"storage": STORAGE_SCHEMA.version, schema.name: schema.version}
        assert await _differences(db, schema, STORAGE_SCHEMA) == []
        async with db.engine.connect() as conn:
            versions = (await conn.execute(sa.select(schema.versions.c.version))).scalars().all()
        assert sorted(versions) == list(range(1, schema.version + 1))
    finally:
        await db.aclose()


async def test_a_token_database_made_before_the_storage_layer_migrates_to_the_declared_schema_and_keeps_its_rows(
    database_url: str,
) -> None:
    legacy = Database(database_url)
    async with legacy.engine.begin() as conn:
        for statement in LEGACY_AUTH_DDL:
            await conn.execute(sa.text(statement))
        await conn.execute(sa.text("INSERT INTO throttle VALUES ('k', 1, 7)"))
        await conn.execute(sa.text("INSERT INTO leases VALUES ('prune', 'old', 1)"))
    await legacy.aclose()
    store = Store(database_url)
    try:
        assert await store.migrate() == AUTH_SCHEMA.version
        assert await _differences(store.db, AUTH_SCHEMA, STORAGE_SCHEMA) == []
        async with store.engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT hits FROM throttle"))).scalar_one() == 7
        assert await store.take_lease("prune", "new", ttl_s=60)  # the old holder's lease ran out long ago
    finally:
        await store.aclose()


NOTE = {"things": ("note",)}


def _wing(*, with_note: bool, migrations: list[Migration]) -> Schema:
    md = sa.MetaData()
    columns = [sa.Column("id", sa.Text, primary_key=True), sa.Column("n", sa.BigInteger, nullable=False)]
    if with_note:
        columns.append(sa.Column("note", sa.Text, server_default=""))
    sa.Table("things", md, *columns, sa.Index("things_n", "n"))
    return Schema("things", md, migrations)


async def test_a_column_added_by_a_later_migration_reaches_old_and_new_databases_alike(tmp_path: Path) -> None:
    v1 = _wing(with_note=False, migrations=[Migration(1, create=("things",))])
    v2 = _wing(
        with_note=True, migrations=[Migration(1, create=("things",)), Migration(2, add_columns={"things": ("note",)})]
    )
    old, new = Database(f"sqlite:///{tmp_path / 'old.db'}", schemas=[v1]), None
    try:
        await old.migrate()
        async with old.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO things (id, n) VALUES ('a', 1)"))
        await old.aclose()
        old = Database(f"sqlite:///{tmp_path / 'old.db'}", schemas=[v2])
        new = Database(f"sqlite:///{tmp_path / 'new.db'}", schemas=[v2])
        for db in (old, new):
            assert (await db.migrate())["things"] == 2
            assert await _differences(db, v2) == []
        async with old.transaction(read_only=True) as conn:
            assert (await conn.execute(sa.text("SELECT id, n, note FROM things"))).all() == [("a", 1, "")]
    finally:
        for db in (old, new):
            if db is not None:
                await db.aclose()


async def test_the_check_notices_a_column_declared_without_a_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    db = Database(url, schemas=[_wing(with_note=False, migrations=[Migration(1, create=("things",))])])
    try:
        await db.migrate()
        forgot = _wing(with_note=True, migrations=[Migration(1, create=("things",))])
        assert await _differences(db, forgot) == ["things.note: missing"]
    finally:
        await db.aclose()


async def test_a_database_newer_than_this_release_is_refused_not_touched(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    two = [Migration(1, create=("things",)), Migration(2, add_columns=NOTE)]
    newer = Database(url, schemas=[_wing(with_note=True, migrations=two)])
    await newer.migrate()
    await newer.aclose()
    older = Database(url, schemas=[_wing(with_note=False, migrations=[Migration(1, create=("things",))])])
    try:
        with pytest.raises(RuntimeError, match="things schema is version 2, newer than this dessert-mcp's"):
            await older.migrate()
    finally:
        await older.aclose()


def test_migrations_must_be_numbered_from_one_without_gaps() -> None:
    with pytest.raises(ValueError, match="numbered"):
        Schema("bad", sa.MetaData(), [Migration(2)])


async def test_databases_opened_at_once_by_several_processes_migrate_one_at_a_time(database_url: str) -> None:
    opened = [Database(database_url, schemas=[AUTH_SCHEMA]) for _ in range(4)]
    try:
        assert await asyncio.gather(*(db.migrate() for db in opened)) == [{"storage": 1, "auth": 2}] * 4
        async with opened[0].engine.connect() as conn:
            versions = (await conn.execute(sa.select(AUTH_SCHEMA.versions.c.version))).scalars().all()
        assert sorted(versions) == [1, 2]
    finally:
        for db in opened:
            await db.aclose()
