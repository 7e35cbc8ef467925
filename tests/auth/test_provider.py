"""The OAuth provider's token logic, straight through its interface (the flows through HTTP are in the other
modules of tests/auth)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp.server.auth.provider import TokenError
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import AnyUrl

from dessert_mcp.auth import DessertOAuthProvider, OAuthConfig, Store
from dessert_mcp.auth._crypto import new_token
from dessert_mcp.config import Secret
from tests.support.api import CANARY_KEY
from tests.support.auth import REDIRECT_URI, Clock, issue_code, link_directly

CLIENT = OAuthClientInformationFull(client_id="rotating", redirect_uris=[AnyUrl(REDIRECT_URI)])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(database_url: str, encryption_key: str, clock: Clock) -> AsyncIterator[DessertOAuthProvider]:
    config = OAuthConfig(
        public_url="http://127.0.0.1:1", encryption_key=Secret(encryption_key), database_url=database_url
    )
    provider = DessertOAuthProvider(config, Store(database_url, clock=clock))
    try:
        yield provider
    finally:
        await provider.aclose()


async def test_a_refresh_token_rotates_once_into_a_new_pair_and_is_refused_once_expired(
    provider: DessertOAuthProvider, clock: Clock
) -> None:
    first, expiring = new_token("dmcp_rt_"), new_token("dmcp_rt_")
    await link_directly(provider, CANARY_KEY, client_id="rotating", refresh=first)
    loaded = await provider.load_refresh_token(CLIENT, first)
    assert loaded is not None
    assert loaded.subject is not None
    assert loaded.subject.startswith("acct:")
    pair = await provider.exchange_refresh_token(CLIENT, loaded, loaded.scopes)
    assert pair.access_token.startswith("dmcp_at_")
    assert pair.refresh_token is not None
    assert pair.refresh_token.startswith("dmcp_rt_")
    assert pair.refresh_token != first
    assert pair.expires_in == provider.config.access_token_ttl_s
    assert await provider.load_access_token(pair.access_token) is not None
    assert await provider.load_refresh_token(CLIENT, first) is None  # spent: a replay ends the family

    await link_directly(provider, CANARY_KEY, client_id="rotating", refresh=expiring)
    loaded = await provider.load_refresh_token(CLIENT, expiring)
    assert loaded is not None
    clock.advance(3601)
    with pytest.raises(TokenError) as refused:
        await provider.exchange_refresh_token(CLIENT, loaded, loaded.scopes)
    assert refused.value.error == "invalid_grant"


async def test_a_refresh_token_still_rotates_in_its_last_second(provider: DessertOAuthProvider, clock: Clock) -> None:
    token = new_token("dmcp_rt_")
    await link_directly(provider, CANARY_KEY, client_id="rotating", refresh=token)
    loaded = await provider.load_refresh_token(CLIENT, token)
    assert loaded is not None
    assert loaded.expires_at is not None
    clock.now = float(loaded.expires_at)  # expires_at is whole seconds, at or before the row's expiry
    assert (await provider.exchange_refresh_token(CLIENT, loaded, loaded.scopes)).access_token


async def test_a_code_exchanges_into_a_prefixed_pair_whose_access_token_carries_its_expiry_and_resource(
    provider: DessertOAuthProvider, clock: Clock
) -> None:
    code = await provider.load_authorization_code(CLIENT, await issue_code(provider, CANARY_KEY, client_id="rotating"))
    assert code is not None
    pair = await provider.exchange_authorization_code(CLIENT, code)
    # The prefixes say what a leaked token is (secret scanners match them) and never collide with a Dessert key.
    assert pair.access_token.startswith("dmcp_at_")
    assert pair.refresh_token is not None
    assert pair.refresh_token.startswith("dmcp_rt_")
    access = await provider.load_access_token(pair.access_token)
    assert access is not None
    assert access.expires_at == int(clock() + provider.config.access_token_ttl_s)
    assert access.resource == provider.config.resource


async def test_a_code_spent_by_a_concurrent_exchange_is_refused_and_revokes_what_it_yielded(
    provider: DessertOAuthProvider,
) -> None:
    issued = await issue_code(provider, CANARY_KEY, client_id="rotating")
    first, second = [await provider.load_authorization_code(CLIENT, issued) for _ in range(2)]
    assert first is not None
    assert second is not None
    pair = await provider.exchange_authorization_code(CLIENT, first)
    with pytest.raises(TokenError) as refused:
        await provider.exchange_authorization_code(CLIENT, second)
    assert refused.value.error == "invalid_grant"
    assert await provider.load_access_token(pair.access_token) is None
    assert pair.refresh_token is not None
    assert await provider.load_refresh_token(CLIENT, pair.refresh_token) is None


async def test_a_refresh_token_spent_by_a_concurrent_exchange_is_refused_and_ends_its_family(
    provider: DessertOAuthProvider,
) -> None:
    token = new_token("dmcp_rt_")
    await link_directly(provider, CANARY_KEY, client_id="rotating", refresh=token)
    first, second = [await provider.load_refresh_token(CLIENT, token) for _ in range(2)]
    assert first is not None
    assert second is not None
    pair = await provider.exchange_refresh_token(CLIENT, first, first.scopes)
    with pytest.raises(TokenError) as refused:
        await provider.exchange_refresh_token(CLIENT, second, second.scopes)
    assert refused.value.error == "invalid_grant"
    assert await provider.load_access_token(pair.access_token) is None
