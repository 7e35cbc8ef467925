"""The OAuth provider's token logic, straight through its interface (the flows through HTTP are in the other
modules of tests/auth)."""

from __future__ import annotations

import pytest
from mcp.server.auth.provider import TokenError
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import AnyUrl

from dessert_mcp.auth import DessertOAuthProvider, OAuthConfig, Store
from dessert_mcp.auth._crypto import new_token
from dessert_mcp.config import Secret
from tests.support.api import CANARY_KEY
from tests.support.auth import REDIRECT_URI, Clock, link_directly


async def test_a_refresh_token_rotates_once_into_a_new_pair_and_is_refused_once_expired(
    database_url: str, encryption_key: str
) -> None:
    clock = Clock()
    config = OAuthConfig(
        public_url="http://127.0.0.1:1", encryption_key=Secret(encryption_key), database_url=database_url
    )
    provider = DessertOAuthProvider(config, Store(database_url, clock=clock))
    client = OAuthClientInformationFull(client_id="rotating", redirect_uris=[AnyUrl(REDIRECT_URI)])
    try:
        first, expiring = new_token("dmcp_rt_"), new_token("dmcp_rt_")
        await link_directly(provider, CANARY_KEY, client_id="rotating", refresh=first)
        loaded = await provider.load_refresh_token(client, first)
        assert loaded is not None
        pair = await provider.exchange_refresh_token(client, loaded, loaded.scopes)
        assert pair.refresh_token not in (None, first)
        assert pair.expires_in == config.access_token_ttl_s
        assert await provider.load_access_token(pair.access_token) is not None
        assert await provider.load_refresh_token(client, first) is None  # spent: a replay ends the family

        await link_directly(provider, CANARY_KEY, client_id="rotating", refresh=expiring)
        loaded = await provider.load_refresh_token(client, expiring)
        assert loaded is not None
        clock.advance(3601)
        with pytest.raises(TokenError) as refused:
            await provider.exchange_refresh_token(client, loaded, loaded.scopes)
        assert refused.value.error == "invalid_grant"
    finally:
        await provider.aclose()
