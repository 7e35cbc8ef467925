from __future__ import annotations

import anyio.lowlevel
import httpx2
import pytest

from dessert_mcp import __version__
from dessert_mcp.client import DessertAPIError, DessertClient, sanitize, upstream_detail
from dessert_mcp.config import Secret, Settings
from dessert_mcp.telemetry import Observer
from tests.support.api import (
    CANARY_KEY,
    DOCS_BALANCE,
    FAKE_BASE_URL,
    ClosingTransport,
    FakeDessertAPI,
    assert_no_secret,
    streamed,
)
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
        (300, "bad_upstream_response", False, "redirect"),
        (304, "bad_upstream_response", False, "HTTP 304 Not Modified"),
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
    if status >= 400:
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


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        ("application/json", b'{"message": "m"}', "m"),
        ("application/json", b'{"detail": "d"}', "d"),
        ("application/json", b'{"error": "e"}', "e"),
        ("application/json", b'{"error_description": "x"}', "x"),
        ("application/problem+json", b'{"error": {"message": "nested"}}', "nested"),
        (
            "application/json",
            b'{"message": "  ", "detail": 5, "error": "the first usable one"}',
            "the first usable one",
        ),
        ("application/json", b"not json {", "not json {"),
        ("text/plain", b"plain words\n  on two lines", "plain words on two lines"),
        ("text/plain", b"\xffnot utf-8", "\ufffdnot utf-8"),
        (None, b"no content type", "no content type"),
        ("text/html; charset=utf-8", b"<h1>502 Bad Gateway</h1>", ""),
    ],
)
def test_the_apis_own_explanation_is_read_from_each_error_body_shape(
    content_type: str | None, body: bytes, detail: str
) -> None:
    headers = httpx2.Headers({"content-type": content_type} if content_type else {})
    assert upstream_detail(headers, body) == detail


async def test_a_status_without_an_explanation_leaves_none_in_the_message() -> None:
    api = FakeDessertAPI({"/v1/balance": lambda r: httpx2.Response(503)})
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.message == "Dessert is unavailable right now (HTTP 503). Try again in a minute."


async def test_a_body_of_the_wrong_shape_names_the_status_and_the_fields_dotted_location() -> None:
    usage = {"recent_transactions": [{"credits_delta": "many"}]}
    api = FakeDessertAPI({"/v1/usage": usage})
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_usage()
    assert info.value.status == 200
    assert "(recent_transactions.0." in info.value.message


async def test_a_non_json_body_without_a_content_type_says_so() -> None:
    api = FakeDessertAPI({"/v1/balance": lambda r: httpx2.Response(200, content=b"hello")})
    async with _client(api) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert "not JSON (no content type)" in info.value.message


def test_a_client_without_a_key_says_so_in_its_repr() -> None:
    assert repr(DessertClient(FAKE_BASE_URL, api_key=None)) == f"DessertClient({FAKE_BASE_URL!r}, key=none)"


async def test_a_view_for_another_key_calls_with_that_key_through_the_same_pool_and_closing_it_closes_nothing() -> None:
    other_key = CANARY_KEY + "2"
    api = FakeDessertAPI(key=other_key)  # accepts only the other key
    transport = ClosingTransport(api)
    owner = DessertClient(FAKE_BASE_URL, api_key=Secret(CANARY_KEY), transport=transport, sleep=_no_wait)
    view = owner.for_key(Secret(other_key), "Sign in again.")
    assert (await view.get_balance()).credits_balance == 205
    assert api.requests[-1].headers["authorization"] == f"Bearer {other_key}"
    with pytest.raises(DessertAPIError) as info:
        await owner.get_balance()
    assert info.value.message.endswith("Check DESSERT_API_KEY.")
    wrong = owner.for_key(Secret("dsk_live_WRONG"), "Sign in again.")
    with pytest.raises(DessertAPIError) as info:
        await wrong.get_balance()
    assert info.value.message.endswith("). Sign in again.")
    await view.aclose()
    assert transport.closed == 0
    await owner.aclose()
    assert transport.closed == 1


async def test_a_client_from_settings_calls_their_origin_with_their_key_attempts_body_cap_and_hint() -> None:
    env = {"DESSERT_API_BASE_URL": FAKE_BASE_URL, "DESSERT_MAX_ATTEMPTS": "1", "DESSERT_MAX_BODY_BYTES": "1024"}
    failing = FakeDessertAPI({"/v1/balance": lambda r: httpx2.Response(503), "/v1/usage": {"x": "y" * 2048}})
    settings = Settings.from_env(env | {"DESSERT_API_KEY": CANARY_KEY})
    async with DessertClient.from_settings(settings, transport=failing.transport(), key_hint="Hint.") as client:
        with pytest.raises(DessertAPIError):
            await client.get_balance()
        assert len(failing.requests) == 1  # one attempt
        with pytest.raises(DessertAPIError) as info:
            await client.get_usage()
        assert "larger than 1 KiB" in info.value.message
    assert failing.requests[0].headers["authorization"] == f"Bearer {CANARY_KEY}"
    rejecting = FakeDessertAPI(key="another")
    async with DessertClient.from_settings(settings, transport=rejecting.transport(), key_hint="Hint.") as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.message.endswith(" Hint.")
    keyless = Settings.from_env(env | {"DESSERT_API_KEY": "pasted with a space"})
    assert keyless.api_key_problem is not None
    async with DessertClient.from_settings(keyless, transport=rejecting.transport()) as client:
        with pytest.raises(DessertAPIError) as info:
            await client.get_balance()
    assert info.value.message == keyless.api_key_problem


class Outcomes(Observer):
    """What the metrics hear of each attempt: its route and outcome."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def upstream_request(self, route: str, outcome: str) -> None:
        self.seen.append((route, outcome))


async def test_each_attempt_is_counted_with_its_status_or_else_what_ended_it() -> None:
    outcomes, asked = Outcomes(), anyio.Event()

    def client(mode: str, timeout_s: float = 60) -> DessertClient:
        async def answer(request: httpx2.Request) -> httpx2.Response:
            if mode == "ok":
                return streamed(httpx2.Response(200, json=DOCS_BALANCE))
            if mode == "refused":
                raise httpx2.ConnectError("connection refused")
            if mode == "bug":
                raise RuntimeError("a bug under the client")
            asked.set()
            await anyio.sleep_forever()
            raise AssertionError("never answers")

        transport = httpx2.MockTransport(answer)
        return DessertClient(
            FAKE_BASE_URL,
            api_key=Secret(CANARY_KEY),
            transport=transport,
            max_attempts=1,
            timeout_s=timeout_s,
            observer=outcomes,
        )

    await client("ok").get_balance()
    with pytest.raises(DessertAPIError):
        await client("refused").get_balance()
    with pytest.raises(RuntimeError):
        await client("bug").get_balance()
    with pytest.raises(DessertAPIError) as late:
        await client("hangs", timeout_s=0.01).get_balance()  # the call's deadline ends the attempt
    assert late.value.code == "timeout"
    async with anyio.create_task_group() as tg:  # the caller goes away mid-attempt
        tg.start_soon(client("hangs").get_balance)
        await asked.wait()
        tg.cancel_scope.cancel()
    assert outcomes.seen == [
        ("/v1/balance", "200"),
        ("/v1/balance", "upstream_unavailable"),
        ("/v1/balance", "RuntimeError"),
        ("/v1/balance", "timeout"),
        ("/v1/balance", "cancelled"),
    ]
