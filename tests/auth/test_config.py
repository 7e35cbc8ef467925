"""The auth wing's settings: refused early, with the variable and the fix in the message."""

from __future__ import annotations

import pytest

from dessert_mcp.auth import CallerToken, OAuthConfig, generate_encryption_key
from dessert_mcp.config import ConfigError, Secret
from tests.support.api import CANARY_KEY, assert_no_secret


def test_oauth_needs_a_public_https_origin_and_an_encryption_key() -> None:
    key = generate_encryption_key()
    with pytest.raises(ConfigError, match="--public-url"):
        OAuthConfig.from_env({"DESSERT_MCP_ENCRYPTION_KEY": key})
    with pytest.raises(ConfigError, match="DESSERT_MCP_ENCRYPTION_KEY"):
        OAuthConfig.from_env({"DESSERT_MCP_PUBLIC_URL": "https://mcp.example.com"})
    for bad in ("http://mcp.example.com", "https://mcp.example.com/mcp", "ftp://x", "https://u:p@mcp.example.com"):
        with pytest.raises(ConfigError):
            OAuthConfig.from_env({"DESSERT_MCP_ENCRYPTION_KEY": key}, public_url=bad)
    config = OAuthConfig.from_env(
        {"DESSERT_MCP_ENCRYPTION_KEY": key, "DESSERT_MCP_DATABASE_URL": "postgresql://db/x"},
        public_url="https://mcp.example.com/",
    )
    assert config.issuer == "https://mcp.example.com"
    assert config.resource == "https://mcp.example.com/mcp"
    assert config.database_url == "postgresql://db/x"
    assert key not in repr(config)


def test_an_unfilled_host_placeholder_counts_as_unset() -> None:
    key = generate_encryption_key()
    with pytest.raises(ConfigError, match="needs --public-url"):
        OAuthConfig.from_env({"DESSERT_MCP_ENCRYPTION_KEY": key, "DESSERT_MCP_PUBLIC_URL": "${user_config.url}"})


def test_the_access_token_lifetime_is_bounded() -> None:
    env = {"DESSERT_MCP_ENCRYPTION_KEY": generate_encryption_key(), "DESSERT_MCP_PUBLIC_URL": "http://127.0.0.1:8000"}
    assert OAuthConfig.from_env({**env, "DESSERT_MCP_ACCESS_TOKEN_TTL_S": "600"}).access_token_ttl_s == 600
    for bad in ("5", "999999", "soon"):
        with pytest.raises(ConfigError, match="DESSERT_MCP_ACCESS_TOKEN_TTL_S"):
            OAuthConfig.from_env({**env, "DESSERT_MCP_ACCESS_TOKEN_TTL_S": bad})


def test_the_token_cache_is_two_seconds_by_default_zero_turns_it_off_and_it_is_bounded() -> None:
    env = {"DESSERT_MCP_ENCRYPTION_KEY": generate_encryption_key(), "DESSERT_MCP_PUBLIC_URL": "http://127.0.0.1:8000"}
    assert OAuthConfig.from_env(env).token_cache_s == 2.0
    assert OAuthConfig.from_env({**env, "DESSERT_MCP_TOKEN_CACHE_S": "0"}).token_cache_s == 0
    assert OAuthConfig.from_env({**env, "DESSERT_MCP_TOKEN_CACHE_S": "0.5"}).token_cache_s == 0.5
    for bad in ("-1", "31", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="DESSERT_MCP_TOKEN_CACHE_S"):
            OAuthConfig.from_env({**env, "DESSERT_MCP_TOKEN_CACHE_S": bad})


def test_a_caller_token_never_shows_or_dumps_the_key_it_carries() -> None:
    token = CallerToken.carrying(Secret(CANARY_KEY), token="fp", client_id="c", scopes=["dessert:read"], subject="s")
    assert token.key.get() == CANARY_KEY
    assert_no_secret(repr(token) + str(token) + token.model_dump_json() + repr(token.model_dump()))


def test_what_a_caller_checks_when_dessert_rejects_their_key_fits_how_the_key_came() -> None:
    def token(client_id: str) -> CallerToken:
        return CallerToken.carrying(Secret(CANARY_KEY), token="fp", client_id=client_id, scopes=[], subject="s")

    assert token("dessert-key").key_hint == "Check the Dessert API key this request sends as its bearer token."
    linked = token("a-registered-oauth-client").key_hint
    assert "sign in again" in linked
    assert "DESSERT_API_KEY" not in linked
