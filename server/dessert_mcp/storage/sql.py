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


def insert_if_absent(conn: AsyncConnection, table: sa.Table, values: Mapping[str, Any]) -> sa.Insert:
    """Insert `values` unless a row already holds one of their unique keys (the primary key or any unique index,
    partial ones included). One statement, so of concurrent writers exactly one inserts; chain `.returning(...)` to
    learn whether this one did (no row back: another row was there first)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return insert(table).values(**values).on_conflict_do_nothing()
