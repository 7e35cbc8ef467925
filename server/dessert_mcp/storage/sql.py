"""The one upsert style of every wing: INSERT ... ON CONFLICT, which SQLite and PostgreSQL both speak."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    values: Mapping[str, Any],
    *,
    key: Sequence[str],
    update: Mapping[str, Any] | None = None,
    where: sa.ColumnElement[bool] | None = None,
) -> sa.Insert:
    """Insert `values`, or where a row with the same `key` columns exists, set `update` on it (by default the
    inserted values) when `where` holds. One statement, so concurrent writers cannot both insert; chain
    `.returning(...)` to learn whether and what it wrote (no row back: the `where` did not hold)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(**values)
    if update is None:
        update = {name: statement.excluded[name] for name in values if name not in key}
    return statement.on_conflict_do_update(index_elements=list(key), set_=dict(update), where=where)


def insert_new(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str] | None = None
) -> sa.Insert:
    """Insert the `rows` whose `key` columns match no row yet; the others are left as they are (one statement, so
    two writers of the same row write it once). Without `key`, a row is new when it clashes with no row on any unique
    key (the primary key or any unique index, partial ones included). Chain `.returning(...)` to learn which rows this
    writer inserted."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    index = list(key) if key is not None else None
    return insert(table).values([dict(row) for row in rows]).on_conflict_do_nothing(index_elements=index)
