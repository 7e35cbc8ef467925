"""`--auth dessert-key`: the caller's own Dessert key on every request, used for that request only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import MCPError

from dessert_mcp.auth import DessertKeyVerifier, refuse_operator_key
from dessert_mcp.config import ConfigError
from tests.auth.conftest import OTHER_KEY, SECOND_BALANCE, SECOND_KEY
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import Running, call_tool, serve_auth
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


async def test_a_get_for_the_event_stream_asks_for_a_key_first_and_then_is_refused_405(server: Running) -> None:
    # Without credentials the 401 comes first: it is how clients (Codex's login check) learn to sign in.
    stream = {"Accept": "text/event-stream"}
    async with httpx2.AsyncClient(timeout=60) as http:
        async with http.stream("GET", server.mcp_url, headers=stream) as anonymous:
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"].startswith("Bearer ")
        keyed = stream | {"Authorization": f"Bearer {CANARY_KEY}"}
        async with http.stream("GET", server.mcp_url, headers=keyed) as response:
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"


async def test_the_tools_use_the_callers_key_for_that_request(
    server: Running, canary_api: ThreadedFaultySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mine = await call_tool(server.mcp_url, CANARY_KEY)
    assert not mine.is_error
    assert mine.structured_content["credits_balance"] == 205
    theirs = await call_tool(server.mcp_url, SECOND_KEY, "dessert.get_usage", limit=1)
    assert not theirs.is_error
    assert theirs.structured_content["recent_transactions"][0]["description"] == "Credit purchase (second account)"
    other = await call_tool(server.mcp_url, OTHER_KEY)
    assert other.is_error
    assert "auth_invalid" in other.content[0].text
    assert_no_secret(repr(mine) + repr(theirs) + repr(other) + caplog.text)
    for key in (SECOND_KEY, OTHER_KEY):
        assert_no_secret(repr(mine) + repr(theirs) + repr(other) + caplog.text, key)


async def test_a_rejected_caller_key_is_called_the_callers_bearer_key_not_a_variable_this_mode_forbids(
    server: Running,
) -> None:
    # A key of its own: one Dessert refused earlier in this module is refused at the door now, without a tool call.
    refused = await call_tool(server.mcp_url, "dsk_live_REFUSED_00112233445566778899")
    assert refused.is_error
    sentence = refused.content[0].text.splitlines()[0]
    assert "DESSERT_API_KEY" not in sentence
    assert sentence.endswith("Check the Dessert API key this request sends as its bearer token.")


def test_the_operators_key_in_the_environment_refuses_to_start_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="never the operator's account"):
        refuse_operator_key({"DESSERT_API_KEY": CANARY_KEY})
    refuse_operator_key({"DESSERT_API_KEY": "  "})


async def test_concurrent_callers_with_different_keys_each_get_only_their_own_answer(server: Running) -> None:
    keys = [CANARY_KEY, SECOND_KEY, OTHER_KEY]
    results: dict[int, Any] = {}

    async def call(i: int) -> None:
        try:
            results[i] = await call_tool(server.mcp_url, keys[i % 3])
        except* MCPError as refused:  # a key Dessert refused before is refused with 401 from then on
            results[i] = refused

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(call, i)
    for i, result in results.items():
        if keys[i % 3] == OTHER_KEY:
            assert isinstance(result, BaseExceptionGroup) or "auth_invalid" in result.content[0].text
        else:
            assert not result.is_error
            assert result.structured_content["credits_balance"] == (205 if i % 3 == 0 else SECOND_BALANCE)


async def test_a_key_calling_again_reuses_its_verified_token_and_the_verifier_keeps_only_recent_keys() -> None:
    verifier = DessertKeyVerifier(max_kept=2)
    first = await verifier.verify_token(CANARY_KEY)
    assert first is not None
    assert await verifier.verify_token(f"  {CANARY_KEY} ") is first  # the same key, the work done once
    other = await verifier.verify_token(OTHER_KEY)
    assert other is not None
    assert other.subject != first.subject
    assert CANARY_KEY not in first.token  # what the SDK keeps per request is a fingerprint, not the key
    assert await verifier.verify_token("not a key") is None
    await verifier.verify_token(SECOND_KEY)  # a third key: the least recently used one makes room
    again = await verifier.verify_token(CANARY_KEY)
    assert again is not first
    assert again is not None
    assert again.subject == first.subject
