"""The token cache: a checked access token is trusted for a bounded few seconds without the database, never past
its expiry; a revocation through the same process holds at once, through another within the bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from dessert_mcp.auth import DessertOAuthProvider, OAuthConfig, Store
from dessert_mcp.auth._crypto import token_hash
from dessert_mcp.auth.config import DEFAULT_TOKEN_CACHE_S
from dessert_mcp.auth.tokencache import EXPIRY_SPREAD, TokenCache, VerifiedToken
from dessert_mcp.config import Secret
from dessert_mcp.storage import SQLITE_POOL_SIZE
from tests.support.api import CANARY_KEY
from tests.support.auth import Clock, link_directly

BOUND = DEFAULT_TOKEN_CACHE_S


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(database_url: str, encryption_key: str) -> OAuthConfig:
    return OAuthConfig(
        public_url="http://127.0.0.1:1", encryption_key=Secret(encryption_key), database_url=database_url
    )


@asynccontextmanager
async def opened(config: OAuthConfig, clock: Clock) -> AsyncIterator[DessertOAuthProvider]:
    """One process's provider on `config`'s database (its own store and cache), closed at the end."""
    assert config.database_url is not None
    provider = DessertOAuthProvider(config, Store(config.database_url, clock=clock))
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def replicas(
    config: OAuthConfig, clock: Clock
) -> AsyncIterator[tuple[DessertOAuthProvider, DessertOAuthProvider]]:
    """Two processes' providers on one database (each its own store and cache), on one test clock."""
    async with opened(config, clock) as a, opened(config, clock) as b:
        yield a, b


async def test_a_token_revoked_through_another_process_is_refused_here_within_the_bound(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider], clock: Clock
) -> None:
    a, b = replicas
    token = await link_directly(a, CANARY_KEY)
    checked = await a.load_access_token(token)
    assert checked is not None
    assert checked.key.get() == CANARY_KEY
    found = await b.load_access_token(token)
    assert found is not None
    await b.revoke_token(found)
    assert await b.load_access_token(token) is None  # the revoking process: at once
    clock.advance(BOUND / 2)
    still = await a.load_access_token(token)  # the other: from its cache, within the bound
    assert still is not None
    assert (still.client_id, still.scopes, still.resource, still.subject) == (
        checked.client_id,
        checked.scopes,
        checked.resource,
        checked.subject,
    )
    clock.advance(BOUND / 2)
    assert await a.load_access_token(token) is None


async def test_a_revocation_through_this_process_is_refused_at_once(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider],
) -> None:
    a, _ = replicas
    token = await link_directly(a, CANARY_KEY)
    checked = await a.load_access_token(token)
    assert checked is not None
    await a.revoke_token(checked)
    assert await a.load_access_token(token) is None


async def test_an_account_revoked_through_this_process_is_refused_at_once_with_all_its_tokens(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider],
) -> None:
    a, _ = replicas
    first, second = await link_directly(a, CANARY_KEY), await link_directly(a, CANARY_KEY, client_id="another")
    checked = [await a.load_access_token(t) for t in (first, second)]
    assert all(c is not None for c in checked)
    assert await a.store.revoke_account(checked[0].subject.removeprefix("acct:"))  # type: ignore[union-attr]
    assert await a.load_access_token(first) is None
    assert await a.load_access_token(second) is None


async def test_a_cached_token_never_outlives_its_own_expiry(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider], clock: Clock
) -> None:
    a, _ = replicas
    expires_at = clock.now + 3600  # link_directly's access tokens live an hour
    token = await link_directly(a, CANARY_KEY)
    clock.now = expires_at - BOUND / 4  # checked again here: cached until the expiry, not BOUND from now
    assert await a.load_access_token(token) is not None
    clock.now = expires_at
    assert await a.load_access_token(token) is None


async def test_with_the_cache_off_every_request_reads_the_database(
    config: OAuthConfig, clock: Clock, replicas: tuple[DessertOAuthProvider, DessertOAuthProvider]
) -> None:
    _, b = replicas
    async with opened(replace(config, token_cache_s=0), clock) as uncached:
        token = await link_directly(uncached, CANARY_KEY)
        assert await uncached.load_access_token(token) is not None
        found = await b.load_access_token(token)
        assert found is not None
        await b.revoke_token(found)
        assert await uncached.load_access_token(token) is None


async def test_unknown_and_wrong_tokens_are_refused_and_never_cached(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider],
) -> None:
    a, _ = replicas
    token = await link_directly(a, CANARY_KEY)
    for wrong in ("", "dmcp_at_nope", token + "x", token[:-1]):
        assert await a.load_access_token(wrong) is None
    assert len(a.tokens) == 0


def _verified(grant_id: str = "g1", account_id: str = "a1", expires_at: float = 1e12) -> VerifiedToken:
    return VerifiedToken(
        grant_id=grant_id,
        account_id=account_id,
        fingerprint="sha256:000000",
        client_id="c",
        scopes=("dessert:read",),
        resource="http://127.0.0.1:1/mcp",
        expires_at=expires_at,
        key=Secret(CANARY_KEY),
    )


def test_a_check_that_raced_a_revocation_is_not_kept() -> None:
    cache = TokenCache(BOUND, clock=Clock())
    seen = cache.generation()  # the database read starts ...
    cache.evict(grant_id="g1")  # ... a revocation lands meanwhile ...
    cache.put(token_hash("t"), _verified(), generation=seen)  # ... and the read's answer comes back
    assert cache.get(token_hash("t")) is None


def test_a_bound_of_one_second_still_keeps_tokens_and_zero_keeps_none() -> None:
    for bound, kept in ((1.0, True), (0.0, False)):
        cache = TokenCache(bound, clock=Clock())
        cache.put(token_hash("t"), _verified(), generation=cache.generation())
        assert (cache.get(token_hash("t")) is not None) is kept


def test_the_cache_holds_at_most_its_bound_forgetting_the_least_recently_used() -> None:
    cache = TokenCache(BOUND, clock=Clock(), max_entries=2)
    for name in ("t1", "t2"):
        cache.put(token_hash(name), _verified(grant_id=name), generation=cache.generation())
    assert cache.get(token_hash("t1")) is not None  # t2 is now the least recently used
    cache.put(token_hash("t3"), _verified(grant_id="t3"), generation=cache.generation())
    assert len(cache) == 2
    assert cache.get(token_hash("t2")) is None
    assert cache.get(token_hash("t1")) is not None
    assert cache.get(token_hash("t3")) is not None


def test_evicting_a_grant_or_an_account_forgets_only_their_tokens() -> None:
    cache = TokenCache(BOUND, clock=Clock())
    tokens = {"t1": _verified("g1", "a1"), "t2": _verified("g2", "a1"), "t3": _verified("g3", "a2")}
    for name, verified in tokens.items():
        cache.put(token_hash(name), verified, generation=cache.generation())
    cache.evict(grant_id="g1")
    assert [n for n in tokens if cache.get(token_hash(n))] == ["t2", "t3"]
    cache.evict(account_id="a1")
    assert [n for n in tokens if cache.get(token_hash(n))] == ["t3"]
    cache.evict()
    assert len(cache) == 0


async def test_requests_that_miss_the_cache_together_share_one_database_read(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = replicas
    token = await link_directly(a, CANARY_KEY)
    reads = 0
    read = a.store.get_access_token

    async def counted(value: str):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await read(value)

    monkeypatch.setattr(a.store, "get_access_token", counted)
    async with anyio.create_task_group() as tg:
        found: list[object] = []

        async def check() -> None:
            found.append(await a.load_access_token(token))

        for _ in range(16):
            tg.start_soon(check)
    assert reads == 1
    assert len(found) == 16
    assert all(f is not None for f in found)
    assert {f.subject for f in found if f is not None} == {found[0].subject}  # type: ignore[attr-defined]


async def test_a_request_after_a_revocation_here_never_joins_a_read_from_before_it(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = replicas
    token = await link_directly(a, CANARY_KEY)
    checked = await a.load_access_token(token)
    assert checked is not None
    a.tokens.evict()  # the entry gone: the next check reads the database
    read = a.store.get_access_token
    raced, release = anyio.Event(), anyio.Event()

    async def raced_read(value: str):  # type: ignore[no-untyped-def]
        row = await read(value)  # read before the revocation, answered after it
        monkeypatch.setattr(a.store, "get_access_token", read)
        raced.set()
        await release.wait()
        return row

    monkeypatch.setattr(a.store, "get_access_token", raced_read)
    results: dict[str, object] = {}

    async def check(when: str) -> None:
        results[when] = await a.load_access_token(token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(check, "before")
        await raced.wait()
        await a.revoke_token(checked)
        tg.start_soon(check, "after")
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert results["after"] is None  # its own read, after the revocation: refused
    assert await a.load_access_token(token) is None  # and the raced read was not cached


def test_tokens_first_seen_together_expire_spread_over_the_last_quarter_of_the_bound_never_past_it() -> None:
    clock = Clock()
    cache = TokenCache(BOUND, clock=clock)
    names = [f"t{i}" for i in range(200)]
    for name in names:
        cache.put(token_hash(name), _verified(grant_id=name), generation=cache.generation())
    clock.advance(BOUND * (1 - EXPIRY_SPREAD) - 1e-6)
    assert all(cache.get(token_hash(n)) is not None for n in names)  # none before three quarters of the bound
    clock.advance(BOUND * EXPIRY_SPREAD / 2)
    left = [n for n in names if cache.get(token_hash(n)) is not None]
    assert 0 < len(left) < len(names)  # some re-read by now, some not yet: not all in one instant
    clock.advance(BOUND * EXPIRY_SPREAD / 2)
    assert all(cache.get(token_hash(n)) is None for n in names)  # and every one by the bound


async def test_bursts_of_token_checks_on_sqlite_reuse_a_fixed_pool_instead_of_opening_connections(
    encryption_key: str, tmp_path: Path
) -> None:
    # Each aiosqlite connection is a thread: a pool that opened and closed connections per burst would start and
    # stop threads (and reopen the file) every DESSERT_MCP_TOKEN_CACHE_S under load.
    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(encryption_key),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
        token_cache_s=0,
    )
    async with opened(config, Clock()) as provider:
        tokens = [await link_directly(provider, CANARY_KEY, client_id=f"c{i}") for i in range(3 * SQLITE_POOL_SIZE)]
        connected: list[object] = []
        sa.event.listen(provider.store.engine.sync_engine, "connect", lambda conn, record: connected.append(conn))
        for _ in range(3):  # three bursts, every check at once
            checked = await asyncio.gather(*(provider.load_access_token(t) for t in tokens))
            assert all(c is not None for c in checked)
        assert len(connected) <= SQLITE_POOL_SIZE


async def test_a_cached_token_gives_the_same_access_token_which_holds_a_fingerprint_and_never_the_token(
    replicas: tuple[DessertOAuthProvider, DessertOAuthProvider],
) -> None:
    a, _ = replicas
    token = await link_directly(a, CANARY_KEY)
    checked = await a.load_access_token(token)
    assert checked is not None
    assert await a.load_access_token(token) is checked  # built once per cache entry
    assert token not in checked.token
    assert checked.token.startswith("sha256:")
    await a.revoke_token(checked)
    assert await a.load_access_token(token) is None  # and gone with the entry
