"""Wings in one process share one database: one engine and pool, each wing's tables migrated beside the others'."""

from __future__ import annotations

import pytest

from dessert_mcp.auth.store import SCHEMA as AUTH_SCHEMA
from dessert_mcp.auth.store import Store
from dessert_mcp.ledger.database import DatabaseLedger
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.storage import Database
from dessert_mcp.storage.leases import STORAGE_SCHEMA
from tests.storage.schema_diff import differences
from tests.support.ledger import chain, read_at, window


async def test_the_auth_wing_and_the_ledger_share_one_database_and_its_pool(database_url: str) -> None:
    db = Database(database_url, schemas=[AUTH_SCHEMA, LEDGER_SCHEMA])
    store, ledger = Store(db), DatabaseLedger(db)
    try:
        assert await store.throttle_hit("k", window_s=60) == 1
        rows = chain([-1] * 10)
        await ledger.record_usage("acct:a", window(rows, 10), read_at(rows, 10))
        assert store.engine is db.engine
        assert [a.rows for a in (await ledger.status()).accounts] == [10]
        async with db.engine.connect() as conn:
            for schema in (STORAGE_SCHEMA, AUTH_SCHEMA, LEDGER_SCHEMA):
                assert await conn.run_sync(differences, schema.metadata) == []
    finally:
        await db.aclose()


def test_a_store_refuses_a_database_opened_without_its_schema() -> None:
    with pytest.raises(ValueError, match="auth wing's schema"):
        Store(Database("sqlite:///:memory:", schemas=[LEDGER_SCHEMA]))
