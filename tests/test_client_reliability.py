"""DessertClient against fake APIs behind httpx2.MockTransport: retries, waits, deadlines, caps, redaction."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, get_args

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dessert_mcp.client import RETRY_AFTER_MAX_S, DessertAPIError, DessertClient, ErrorCode, retry_after
from dessert_mcp.config import Secret
from dessert_mcp.sandbox import SandboxAccount
from tests.support.api import streamed

KEY = "dsk_test_canary_0123456789abcdefghijklmnopqrstuv"
BALANCE = SandboxAccount().balance()

Reply = httpx2.Response | Callable[[httpx2.Request], httpx2.Response]


class FakeDessertAPI:
    """Answers each request with the next scripted reply; fails loudly when the script runs out."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        assert self.replies, f"unexpected request {request.method} {request.url}"
        reply = self.replies.pop(0)
        return streamed(reply(request) if callable(reply) else reply)


class FakeTime:
    """anyio's clock, moved forward by each wait the client asks for instead of waiting; a record of every wait."""

    def __init__(self) -> None:
        self.slept = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return anyio.current_time() + self.slept

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.slept += seconds


def client_for(api: FakeDessertAPI, time: FakeTime | None = None, **options: Any) -> DessertClient:
    time = time or FakeTime()
    return DessertClient(
        "https://api.dessert.test",
        api_key=Secret(KEY),
        transport=httpx2.MockTransport(api),
        sleep=time.sleep,
        clock=time.clock,
        rng=random.Random(7),
        **options,
    )


def ok() -> httpx2.Response:
    return httpx2.Response(200, json=BALANCE)


def status(code: int, **headers: str) -> httpx2.Response:
    return httpx2.Response(code, json={"error": "x", "message": f"status {code}"}, headers=headers)


async def balance_error(api: FakeDessertAPI, time: FakeTime | None = None, **options: Any) -> DessertAPIError:
    async with client_for(api, time, **options) as client:
        with pytest.raises(DessertAPIError) as caught:
            await client.get_balance()
    return caught.value


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried_and_a_later_success_is_returned(code: int) -> None:
    api = FakeDessertAPI(status(code), ok())
    async with client_for(api) as client:
        balance = await client.get_balance()
    assert balance.credits_balance == BALANCE["credits_balance"]
    assert len(api.requests) == 2


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (400, "bad_upstream_response"),
        (401, "auth_invalid"),
        (403, "forbidden"),
        (404, "not_found"),
        (422, "bad_upstream_response"),
    ],
)
async def test_other_client_errors_are_not_retried(code: int, expected: str) -> None:
    api = FakeDessertAPI(status(code))
    error = await balance_error(api)
    assert (error.code, error.status, len(api.requests)) == (expected, code, 1)


async def test_a_server_error_that_persists_is_tried_exactly_three_times_with_growing_jittered_waits() -> None:
    api = FakeDessertAPI(status(503), status(503), status(503))
    time = FakeTime()
    error = await balance_error(api, time)
    assert (error.code, error.retryable, len(api.requests)) == ("upstream_unavailable", True, 3)
    first, second = time.waits
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


async def test_max_attempts_setting_bounds_the_attempts() -> None:
    api = FakeDessertAPI(status(500), status(500), status(500), status(500), status(500))
    await balance_error(api, max_attempts=5)
    assert len(api.requests) == 5


async def test_connection_errors_are_retried() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    api = FakeDessertAPI(refuse, refuse, ok())
    async with client_for(api) as client:
        await client.get_balance()
    assert len(api.requests) == 3


async def test_retry_after_seconds_is_waited_exactly_when_it_fits_the_deadline() -> None:
    api = FakeDessertAPI(status(429, **{"Retry-After": "1"}), ok())
    time = FakeTime()
    async with client_for(api, time) as client:
        await client.get_balance()
    assert time.waits == [1.0]


async def test_retry_after_ms_wins_over_retry_after() -> None:
    api = FakeDessertAPI(status(503, **{"Retry-After": "9", "retry-after-ms": "250"}), ok())
    time = FakeTime()
    async with client_for(api, time) as client:
        await client.get_balance()
    assert time.waits == [0.25]


async def test_a_retry_after_longer_than_the_budget_is_not_waited_but_returned() -> None:
    api = FakeDessertAPI(status(429, **{"Retry-After": "120"}))
    time = FakeTime()
    error = await balance_error(api, time, timeout_s=10)
    assert (error.code, error.retry_after_s, time.waits, len(api.requests)) == ("rate_limited", 120.0, [], 1)
    assert "Wait 120 s" in error.message


@pytest.mark.parametrize("garbage", ["soon", "-5", "1e309", "NaN", "Mon, 99 Foo 2026", "", "1.5.0", "0x10"])
async def test_garbage_retry_after_values_fall_back_to_backoff(garbage: str) -> None:
    api = FakeDessertAPI(status(429, **{"Retry-After": garbage, "retry-after-ms": garbage}), ok())
    time = FakeTime()
    async with client_for(api, time) as client:
        await client.get_balance()
    assert len(time.waits) == 1
    assert time.waits[0] <= 0.5


def test_retry_after_reads_http_dates_relative_to_now() -> None:
    now = datetime(2026, 5, 19, 18, 0, tzinfo=UTC)
    headers = httpx2.Headers({"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)})
    assert retry_after(headers, now=now) == 30.0
    past = httpx2.Headers({"Retry-After": format_datetime(now - timedelta(hours=1), usegmt=True)})
    assert retry_after(past, now=now) == 0.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1234"}, 1.234),  # milliseconds, to the millisecond
        ({"retry-after-ms": "0.4"}, 0.0),  # rounded to milliseconds
        ({"retry-after-ms": "0", "Retry-After": "9"}, 0.0),  # zero is an answer: retry now
        ({"Retry-After": "Tue, 19 May 2026 18:00:30 -0000"}, 30.0),  # an HTTP date without a zone is UTC
        ({"Retry-After": "Tue, 19 May 2026 18:00:00 GMT"}, 0.0),
        ({"retry-after-ms": str(10**12)}, RETRY_AFTER_MAX_S),  # capped at a day
    ],
)
def test_retry_after_reads_each_form_exactly(headers: dict[str, str], seconds: float) -> None:
    now = datetime(2026, 5, 19, 18, 0, tzinfo=UTC)
    assert retry_after(httpx2.Headers(headers), now=now) == seconds


def test_retry_after_dates_count_to_the_millisecond_from_the_real_clock_by_default() -> None:
    now = datetime(2026, 5, 19, 18, 0, 0, 250_400, tzinfo=UTC)
    assert retry_after(httpx2.Headers({"Retry-After": "Tue, 19 May 2026 18:00:30 GMT"}), now=now) == 29.75
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert 3500 < (retry_after(httpx2.Headers({"Retry-After": later})) or 0) <= 3600


async def test_backoff_that_would_outlast_the_deadline_gives_up_with_the_last_error() -> None:
    api = FakeDessertAPI(status(502))
    time = FakeTime()
    error = await balance_error(api, time, timeout_s=0.2)
    assert (error.code, time.waits, len(api.requests)) == ("upstream_unavailable", [], 1)


async def test_the_deadline_covers_a_body_that_trickles_forever() -> None:
    class Trickle(httpx2.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            while True:
                yield b" "
                await anyio.sleep(0.01)

    api = FakeDessertAPI(lambda request: httpx2.Response(200, stream=Trickle()))
    with anyio.fail_after(60):  # only a guard: without the deadline the body never ends
        error = await balance_error(api, timeout_s=0.3)
    assert error.code == "timeout"


async def test_a_gzip_bomb_is_refused_after_the_decoded_cap() -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    api = FakeDessertAPI(httpx2.Response(200, stream=httpx2.ByteStream(bomb), headers={"Content-Encoding": "gzip"}))
    error = await balance_error(api)
    assert (error.code, len(api.requests)) == ("bad_upstream_response", 1)
    assert "larger than 1024 KiB" in error.message


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_in_its_declared_encoding_is_a_bad_upstream_response(encoding: str) -> None:
    body = b'{"credits_balance": 205}'  # plain JSON, labelled compressed
    api = FakeDessertAPI(httpx2.Response(200, stream=httpx2.ByteStream(body), headers={"Content-Encoding": encoding}))
    error = await balance_error(api)
    assert (error.code, error.retryable, len(api.requests)) == ("bad_upstream_response", False, 1)
    assert error.message == (
        "Dessert's answer to GET /v1/balance could not be decoded. Try again; if it persists, contact Dessert."
    )


async def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else() -> None:
    api = FakeDessertAPI(httpx2.Response(302, headers={"Location": "https://evil.example/steal"}))
    error = await balance_error(api)
    assert (error.code, error.status, len(api.requests)) == ("bad_upstream_response", 302, 1)
    assert all(r.url.host == "api.dessert.test" for r in api.requests)


async def test_the_key_echoed_by_the_api_is_redacted_from_error_messages() -> None:
    api = FakeDessertAPI(httpx2.Response(401, json={"message": f"key {KEY} is revoked; prefix {KEY[3:15]}"}))
    error = await balance_error(api)
    assert error.code == "auth_invalid"
    assert KEY not in str(error)
    assert KEY[3:15] not in error.message
    assert "[REDACTED]" in error.message


async def test_the_key_echoed_in_a_successful_answer_is_redacted_from_the_result() -> None:
    usage = SandboxAccount().usage()
    usage["recent_transactions"][0]["description"] = f"made with {KEY}"
    api = FakeDessertAPI(httpx2.Response(200, json=usage))
    async with client_for(api) as client:
        result = await client.get_usage()
    assert KEY not in result.model_dump_json()
    assert result.recent_transactions[0].description == "made with [REDACTED]"


def test_the_client_repr_shows_a_fingerprint_not_the_key() -> None:
    client = client_for(FakeDessertAPI())
    assert KEY not in repr(client)
    assert "sha256:" in repr(client)


async def test_extra_unknown_fields_are_accepted() -> None:
    api = FakeDessertAPI(httpx2.Response(200, json={**BALANCE, "new_field": {"x": [1, 2]}}))
    async with client_for(api) as client:
        assert (await client.get_balance()).credits_balance == BALANCE["credits_balance"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _mutations() -> st.SearchStrategy[bytes]:
    balance_like = st.fixed_dictionaries({k: st.one_of(st.just(v), json_values) for k, v in BALANCE.items()})
    usage_like = st.fixed_dictionaries(
        {
            "recent_transactions": st.lists(
                st.dictionaries(
                    st.sampled_from(["type", "credits_delta", "balance_after", "usd_amount", "description", "at"]),
                    json_values,
                ),
                max_size=3,
            )
        }
    )
    as_json = st.one_of(json_values, balance_like, usage_like).map(lambda v: json.dumps(v).encode())
    return st.one_of(as_json, st.binary(max_size=200))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_mutations(), endpoint=st.sampled_from(["balance", "usage"]))
def test_any_200_body_gives_a_model_or_a_bad_upstream_response_never_a_crash(body: bytes, endpoint: str) -> None:
    api = FakeDessertAPI(httpx2.Response(200, content=body, headers={"Content-Type": "application/json"}))

    async def call() -> DessertAPIError | None:
        async with client_for(api) as client:
            try:
                await (client.get_balance() if endpoint == "balance" else client.get_usage())
            except DessertAPIError as exc:
                return exc
        return None

    error = anyio.run(call)
    if error is not None:
        assert error.code == "bad_upstream_response"
        assert len(error.message) < 600
    assert len(api.requests) == 1


def test_the_error_codes_are_exactly_the_documented_taxonomy() -> None:
    # Agents and scripts match on these; adding, renaming or dropping one is a breaking change.
    assert set(get_args(ErrorCode)) == {
        "auth_invalid",
        "forbidden",
        "not_found",
        "rate_limited",
        "upstream_unavailable",
        "timeout",
        "bad_upstream_response",
        "invalid_argument",
        "not_configured",
    }
