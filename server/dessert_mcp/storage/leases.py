"""Leases: background work that one replica does for all (pruning, polling), and who holds it until when."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dessert_mcp.storage.schema import Migration, Schema
from dessert_mcp.storage.sql import upsert

_md = sa.MetaData()
LEASES: Final = sa.Table(
    "leases",
    _md,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
)
# The storage layer's own tables, in every database it opens. (A token database made before the storage layer has
# the table already, from the auth wing's second migration: creating it skips it.)
STORAGE_SCHEMA: Final = Schema("storage", _md, [Migration(1, create=("leases",))])


async def take(conn: AsyncConnection, name: str, holder: str, *, now: float, ttl_s: float, renew: bool = False) -> bool:
    """Take the lease `name` until `now + ttl_s` if nobody holds it (or theirs has run out), or, `renew`, if this
    holder does; True if taken."""
    free = LEASES.c.expires_at <= now
    statement = upsert(
        conn,
        LEASES,
        {"name": name, "holder": holder, "expires_at": now + ttl_s},
        key=["name"],
        where=sa.or_(free, LEASES.c.holder == holder) if renew else free,
    ).returning(LEASES.c.holder)
    return (await conn.execute(statement)).first() is not None


async def release(conn: AsyncConnection, names: Collection[str], holder: str) -> None:
    """Give up the leases `names` this holder holds (another holder's are left as they are)."""
    await conn.execute(LEASES.delete().where(LEASES.c.name.in_(list(names)), LEASES.c.holder == holder))
