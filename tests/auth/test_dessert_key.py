"""`--auth dessert-key`: the caller's own Dessert key on every request, used for that request only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest

from dessert_mcp.auth import refuse_operator_key
from dessert_mcp.config import ConfigError
from tests.auth.conftest import OTHER_KEY
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import Running, my_balance, serve_auth
from tests.support.faults import ThreadedFaultySandbox


@pytest.fixture(scope="module")
def server(canary_api: ThreadedFaultySandbox) -> Iterator[Running]:
    with serve_auth("dessert-key", dessert_url=canary_api.url) as running:
        yield running


async def test_a_request_without_a_key_gets_401_and_never_the_operators_account(server: Running) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer ")
        garbled = await http.post(server.mcp_url, json={}, headers={"Authorization": "Bearer has spaces\tand tabs"})
        assert garbled.status_code == 401


async def test_the_tool_uses_the_callers_key_for_that_request(
    server: Running, canary_api: ThreadedFaultySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = await my_balance(server.mcp_url, CANARY_KEY)
    assert not result.is_error
    data = result.structured_content
    assert data["credits_balance"] == canary_api.sandbox.account.balance()["credits_balance"]
    assert data["key"] == "dsk_…1514"
    assert data["who"].startswith("key:")
    other = await my_balance(server.mcp_url, OTHER_KEY)
    assert other.is_error
    assert "auth_invalid" in other.content[0].text
    assert_no_secret(repr(result) + repr(other) + caplog.text)
    assert_no_secret(repr(other), OTHER_KEY)


def test_the_operators_key_in_the_environment_refuses_to_start_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="never the operator's account"):
        refuse_operator_key({"DESSERT_API_KEY": CANARY_KEY})
    refuse_operator_key({"DESSERT_API_KEY": "  "})


async def test_concurrent_callers_with_different_keys_each_get_only_their_own_answer(server: Running) -> None:
    results: dict[int, Any] = {}

    async def call(i: int) -> None:
        results[i] = await my_balance(server.mcp_url, CANARY_KEY if i % 2 == 0 else OTHER_KEY)

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(call, i)
    for i, result in results.items():
        if i % 2 == 0:
            assert not result.is_error
            assert result.structured_content["key"] == "dsk_…1514"
        else:
            assert result.is_error
            assert "auth_invalid" in result.content[0].text
