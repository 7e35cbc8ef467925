from __future__ import annotations

import anyio.lowlevel
import httpx2
import pytest

from dessert_mcp import __version__
from dessert_mcp.client import DessertAPIError, DessertClient, sanitize
from dessert_mcp.config import Secret
from tests.support.api import CANARY_KEY, DOCS_BALANCE, FAKE_BASE_URL, FakeDessertAPI, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox


async def _no_wait(seconds: float) -> None:
    """Retries happen at once: these tests check what a failure becomes (test_client_reliability checks the waits)."""
    await anyio.lowlevel.checkpoint()


def _client(api: FakeDessertAPI, key: str | None = CANARY_KEY) -> DessertClient:
    key_secret = Secret(key) if key else None
    return DessertClient(FAKE_BASE_URL, api_key=key_secret, transport=api.transport(), sleep=_no_wait)


async def test_balance_is_fetched_with_bearer_accept_and_user_agent_headers(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        balance = await client.get_balance()
    assert balance.credits_balance == 205
    request = fake_api.requests[0]
    assert request.url == f"{FAKE_BASE_URL}/v1/balance"
    assert request.headers["authorization"] == f"Bearer {CANARY_KEY}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith(f"dessert-mcp/{__version__}")


async def test_usage_is_fetched_and_validated(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        usage = await client.get_usage()
    assert [t.type for t in usage.recent_transactions] == ["Deduction", "Purchase", "Bonus"]


async def test_one_connection_pool_serves_many_calls(sandbox: ThreadedFaultySandbox) -> None:
    accepted = sandbox.stats()["accepted_connections"]
    async with DessertClient(sandbox.url, api_key=Secret(sandbox.key)) as client:
        for _ in range(5):
            await client.get_balance()
            await client.get_usage()
    assert sandbox.stats()["requests"] == {"/v1/balance": 5, "/v1/usage": 5}
    assert sandbox.stats()["accepted_connections"] - accepted == 1


async def test_no_key_fails_before_any_request(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api, key=None) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.code == "not_configured"
    assert "DESSERT_API_KEY" in info.value.message
    assert fake_api.requests == []


@pytest.mark.parametrize(
    ("status", "code", "retryable", "phrase"),
    [
        (401, "auth_invalid", False, "Check DESSERT_API_KEY"),
        (403, "forbidden", False, "HTTP 403"),
        (404, "not_found", False, "DESSERT_API_BASE_URL"),
        (429, "rate_limited", True, "rate-limiting"),
        (500, "upstream_unavailable", True, "HTTP 500"),
        (503, "upstream_unavailable", True, "HTTP 503"),
        (400, "bad_upstream_response", False, "HTTP 400"),
        (302, "bad_upstream_response", False, "redirect"),
    ],
)
async def test_non_2xx_statuses_become_one_domain_error(status: int, code: str, retryable: bool, phrase: str) -> None:
    api = FakeDessertAPI(
        {"/v1/balance": lambda r: httpx2.Response(status, json={"message": "upstream says no"})}, key=CANARY_KEY
    )
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    error = info.value
    assert (error.status, error.code, error.retryable) == (status, code, retryable)
    assert phrase in error.message
    if status != 302:
        assert "upstream says no" in error.message


async def test_a_wrong_key_is_reported_as_auth_invalid_without_echoing_it() -> None:
    api = FakeDessertAPI(key="the-right-key")
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.message == "Dessert rejected the API key (HTTP 401: Invalid API key.). Check DESSERT_API_KEY."
    assert_no_secret(str(info.value))


async def test_a_non_json_body_is_a_bad_upstream_response() -> None:
    api = FakeDessertAPI(
        {"/v1/balance": lambda r: httpx2.Response(200, text="<html>hi</html>", headers={"content-type": "text/html"})}
    )
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.code == "bad_upstream_response"
    assert "not JSON (text/html)" in info.value.message


async def test_a_body_of_the_wrong_shape_names_the_field() -> None:
    api = FakeDessertAPI({"/v1/balance": DOCS_BALANCE | {"credits_balance": "lots"}})
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.code == "bad_upstream_response"
    assert "credits_balance" in info.value.message


async def test_a_body_over_one_mebibyte_is_refused() -> None:
    huge = b'{"recent_transactions": [' + b" " * (2 * 1024 * 1024) + b"]}"
    api = FakeDessertAPI({"/v1/usage": lambda r: httpx2.Response(200, content=huge)})
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_usage()
    assert info.value.code == "bad_upstream_response"
    assert "larger than 1024 KiB" in info.value.message


async def test_connection_failures_are_upstream_unavailable() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    async with DessertClient(
        FAKE_BASE_URL, api_key=Secret(CANARY_KEY), transport=httpx2.MockTransport(refuse), sleep=_no_wait
    ) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.code == "upstream_unavailable"
    assert info.value.retryable is True
    assert FAKE_BASE_URL in info.value.message


def test_sanitize_strips_control_zero_width_and_bidi_characters_and_caps_length() -> None:
    assert sanitize("a\x00b\u200bc\u202ed\nnew  line") == "abcd new line"
    assert len(sanitize("x" * 500)) == 200
