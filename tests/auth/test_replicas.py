"""Two replicas on one PostgreSQL: any replica honours any token, a revocation holds on the replica that made it
at once and on the other within its token cache's bound (DESSERT_MCP_TOKEN_CACHE_S, driven here by a test clock),
and losing the database is a clear 503 that heals by itself, with nothing lost."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx2
import pytest

from dessert_mcp.auth import Store, list_accounts
from dessert_mcp.auth.config import DEFAULT_TOKEN_CACHE_S
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import Clock, FlowClient, Running, call_tool, serve_auth
from tests.support.faults import ThreadedFaultySandbox
from tests.support.postgres import Postgres


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def replicas(
    postgres: Postgres, canary_api: ThreadedFaultySandbox, encryption_key: str, clock: Clock
) -> Iterator[tuple[Running, Running, str]]:
    url = postgres.database()
    common = {"dessert_url": canary_api.url, "database_url": url, "encryption_key": encryption_key, "clock": clock}
    with serve_auth("oauth", **common) as a, serve_auth("oauth", public_url=a.url, **common) as b:
        yield a, b, url


@pytest.fixture(autouse=True)
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert_no_secret(caplog.text)


async def test_a_token_issued_through_one_replica_works_on_the_other(replicas: tuple[Running, Running, str]) -> None:
    a, b, _ = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        via_a, via_b = FlowClient(http, a.url), FlowClient(http, b.url)
        client = await via_a.register()
        tokens = await via_a.tokens_for(client, CANARY_KEY)
        result = await call_tool(b.url + "/mcp", tokens["access_token"])
        assert not result.is_error
        assert result.structured_content["credits_balance"] == 205
        # Refresh on B, then replay the old refresh token on A: the family dies on both.
        rotated = await via_b.refresh(client, tokens["refresh_token"])
        assert rotated.status_code == 200
        assert (await via_a.refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await via_a.call_tool(a.url + "/mcp", rotated.json()["access_token"])).status_code == 401


async def test_a_revocation_on_one_replica_holds_there_at_once_and_on_the_other_within_the_bound(
    replicas: tuple[Running, Running, str], clock: Clock
) -> None:
    a, b, _ = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        via_a, via_b = FlowClient(http, a.url), FlowClient(http, b.url)
        client = await via_a.register()
        tokens = await via_a.tokens_for(client, CANARY_KEY)
        for replica in (a, b):  # both replicas now hold the token as checked
            assert (await via_a.call_tool(replica.mcp_url, tokens["access_token"])).status_code == 200
        assert (await via_b.revoke(client, tokens["access_token"])).status_code == 200
        assert (await via_b.call_tool(b.mcp_url, tokens["access_token"])).status_code == 401
        # A checked the token less than DEFAULT_TOKEN_CACHE_S ago: within the documented bound it may still pass.
        assert (await via_a.call_tool(a.mcp_url, tokens["access_token"])).status_code == 200
        clock.advance(DEFAULT_TOKEN_CACHE_S)
        assert (await via_a.call_tool(a.mcp_url, tokens["access_token"])).status_code == 401


async def test_an_operator_revoking_an_account_ends_its_sessions_on_every_replica_within_the_bound(
    replicas: tuple[Running, Running, str], clock: Clock
) -> None:
    a, b, url = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        via_a = FlowClient(http, a.url)
        tokens = await via_a.tokens_for(await via_a.register(), CANARY_KEY)
        for replica in (a, b):
            assert (await via_a.call_tool(replica.mcp_url, tokens["access_token"])).status_code == 200
        store = Store(url, clock=clock)  # `dessert-mcp accounts revoke`: a third process
        try:
            [account] = await list_accounts(store)
            assert await store.revoke_account(account.id)
        finally:
            await store.aclose()
        clock.advance(DEFAULT_TOKEN_CACHE_S)
        for replica in (a, b):
            assert (await via_a.call_tool(replica.mcp_url, tokens["access_token"])).status_code == 401


async def test_a_stopped_database_is_a_clear_503_and_service_resumes_with_nothing_lost(
    postgres: Postgres, replicas: tuple[Running, Running, str]
) -> None:
    a, b, _ = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        via_a = FlowClient(http, a.url)
        client = await via_a.register()
        tokens = await via_a.tokens_for(client, CANARY_KEY)
        postgres.stop()
        try:
            down = await via_a.call_tool(b.url + "/mcp", tokens["access_token"])
            assert down.status_code == 503
            assert down.json()["error"] == "temporarily_unavailable"
            assert "token database" in down.json()["error_description"]
            assert down.headers["retry-after"] == "5"
            token_down = await via_a.refresh(client, tokens["refresh_token"])
            assert token_down.status_code == 503
        finally:
            postgres.start()
        assert (await via_a.call_tool(b.url + "/mcp", tokens["access_token"])).status_code == 200
        assert (await via_a.refresh(client, tokens["refresh_token"])).status_code == 200
    assert_no_secret("\n".join(via_a.seen))


async def test_tokens_survive_a_server_restart(
    postgres: Postgres, canary_api: ThreadedFaultySandbox, encryption_key: str
) -> None:
    url = postgres.database()
    common = {"dessert_url": canary_api.url, "database_url": url, "encryption_key": encryption_key}
    with serve_auth("oauth", **common) as first:
        public = first.url
        async with httpx2.AsyncClient(timeout=30) as http:
            tokens = await FlowClient(http, first.url).tokens_for(
                await FlowClient(http, first.url).register(), CANARY_KEY
            )
    with serve_auth("oauth", public_url=public, **common) as second:
        result = await call_tool(second.url + "/mcp", tokens["access_token"])
        assert not result.is_error
