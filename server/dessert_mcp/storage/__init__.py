"""The one storage layer of every wing that keeps state (the auth wing's tokens, the ledger).

    from dessert_mcp.storage import Database, Migration, Schema, upsert

    _md = sa.MetaData()
    ROWS = sa.Table("rows", _md, sa.Column("id", sa.Text, primary_key=True), ...)   # declared once, full types
    SCHEMA = Schema("mywing", _md, [Migration(1, create=("rows",))])

    db = Database(url, schemas=[SCHEMA], label="my database")   # url: DESSERT_MCP_DATABASE_URL or a default
    async with db.transaction() as conn:                         # migrates on first use
        await conn.execute(upsert(conn, ROWS, {...}, key=["id"]))
    # a fault of the database (unreachable, file read-only or deleted) raises StorageUnavailable

A wing owns its tables in its own module; this package owns the engine and pool, the SQLite pragmas and file
checks, transactions, error translation, migrations and leases. Imported only by wings that keep state: it needs
SQLAlchemy and the database drivers.
"""

from __future__ import annotations

from dessert_mcp.storage.database import SQLITE_POOL_SIZE, Database, StorageUnavailable
from dessert_mcp.storage.schema import Migration, Schema
from dessert_mcp.storage.sql import insert_new, upsert
from dessert_mcp.storage.urls import (
    describe_database_url,
    normalize_database_url,
    sqlite_file,
    user_database_url,
)

__all__ = [
    "SQLITE_POOL_SIZE",
    "Database",
    "Migration",
    "Schema",
    "StorageUnavailable",
    "describe_database_url",
    "insert_new",
    "normalize_database_url",
    "sqlite_file",
    "upsert",
    "user_database_url",
]
