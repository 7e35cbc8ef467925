"""Pruning: expired tokens, codes, sign-ins, throttle windows, dead grants and abandoned clients are deleted on a
schedule that the server starts itself, and replicas sharing a database take turns under one lease."""

from __future__ import annotations

import asyncio

import anyio
import sqlalchemy as sa

from dessert_mcp.auth import KeyBox, OAuthConfig, Store, generate_encryption_key
from dessert_mcp.auth.store import ABANDONED_CLIENT_S
from dessert_mcp.auth.wiring import OAuthWiring
from dessert_mcp.config import Secret
from tests.auth.test_store import _link
from tests.support.auth import Clock

TABLES = ("clients", "sign_ins", "grants", "authorization_codes", "access_tokens", "refresh_tokens", "throttle")


async def _fill(store: Store) -> None:
    """One of each kind of row that expires: a registered client, a sign-in, a grant with its code and tokens, and
    a throttle window."""
    box = KeyBox(generate_encryption_key())
    await store.put_client("client-1", kind="dcr", info={"client_id": "client-1"}, secret_sealed=None)
    await store.create_sign_in(
        "sign-in",
        client_id="client-1",
        params={},
        csrf="csrf",
        expires_at=store.clock() + 900,
        key_sealed="sealed",
        account={},
    )
    _, code = await _link(store, box)
    await store.redeem_code(code, access="a1", access_ttl_s=900, refresh="r1", refresh_ttl_s=30 * 24 * 3600)
    await store.throttle_hit("token:127.0.0.1", window_s=300)


async def _counts(store: Store) -> dict[str, int]:
    async with store.engine.connect() as conn:
        return {t: (await conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}"))).scalar_one() for t in TABLES}


def _wiring(store: Store, encryption_key: str, prune_every_s: float = 3600) -> OAuthWiring:
    config = OAuthConfig(public_url="http://127.0.0.1:1", encryption_key=Secret(encryption_key))
    return OAuthWiring(config, store=store, prune_every_s=prune_every_s)


async def test_pruning_leaves_nothing_expired_but_the_linked_accounts(database_url: str) -> None:
    clock = Clock()
    store = Store(database_url, clock=clock)
    try:
        await _fill(store)
        assert set((await _counts(store)).values()) == {1}
        await store.prune()
        assert set((await _counts(store)).values()) == {1}  # nothing has expired yet
        clock.advance(ABANDONED_CLIENT_S + 2 * 3600)
        await store.prune()
        assert await _counts(store) == dict.fromkeys(TABLES, 0)
        assert len(await store.list_accounts()) == 1
    finally:
        await store.aclose()


async def test_a_client_with_a_live_grant_is_kept_however_old(database_url: str) -> None:
    clock = Clock()
    store = Store(database_url, clock=clock)
    try:
        await _fill(store)
        await store.put_client("client-0", kind="dcr", info={"client_id": "client-0"}, secret_sealed=None)
        clock.advance(ABANDONED_CLIENT_S + 2 * 3600)
        await _link(store, KeyBox(generate_encryption_key()), client_id="client-1")
        await store.prune()
        assert (await _counts(store))["clients"] == 1  # client-1's new grant keeps it; client-0 is gone
        assert await store.get_client("client-1") is not None
    finally:
        await store.aclose()


async def test_two_replicas_sharing_a_database_prune_once_per_period_between_them(
    database_url: str, encryption_key: str
) -> None:
    clock = Clock()
    first, second = Store(database_url, clock=clock), Store(database_url, clock=clock)
    a, b = _wiring(first, encryption_key, prune_every_s=600), _wiring(second, encryption_key, prune_every_s=600)
    try:
        await first.migrate()
        await second.migrate()
        for _ in range(3):
            turns = await asyncio.gather(*(w.prune_once() for w in (a, b, a, b)))
            assert sum(t is not None for t in turns) == 1
            assert await a.prune_once() is None
            assert await b.prune_once() is None
            clock.advance(601)
    finally:
        await a.aclose()
        await b.aclose()


class WatchedStore(Store):
    """A store that says when a prune has run."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.pruned = anyio.Event()

    async def prune(self, *, grace_s: float = 3600) -> int:
        deleted = await super().prune(grace_s=grace_s)
        self.pruned.set()
        return deleted


async def test_the_server_prunes_on_its_own_schedule_from_start_until_close(
    database_url: str, encryption_key: str
) -> None:
    store = WatchedStore(database_url)
    wiring = _wiring(store, encryption_key)
    await wiring.start()  # what the app's lifespan does
    try:
        with anyio.fail_after(60):
            await store.pruned.wait()
    finally:
        await wiring.aclose()
    assert not wiring.pruner.running
