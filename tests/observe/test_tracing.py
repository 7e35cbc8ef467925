"""Traces: the SDK's span per MCP message, with one child span per Dessert request, and nothing secret in them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import httpx2
from mcp import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dessert_mcp.client import DessertClient
from dessert_mcp.config import Secret, Settings
from dessert_mcp.tools import build_server
from tests.support.api import (
    CANARY_KEY,
    DOCS_BALANCE,
    DOCS_USAGE,
    FAKE_BASE_URL,
    FakeDessertAPI,
    assert_no_secret,
    streamed,
)


def _settings(**env: str) -> Settings:
    base = {"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": FAKE_BASE_URL, "DESSERT_BACKOFF_S": "0"}
    return Settings.from_env(base | env)


def _flaky(*statuses: int) -> FakeDessertAPI:
    """The fake API, answering /v1/balance with `statuses` first (each once), then the documented balance."""
    pending = list(statuses)

    def balance(request: httpx2.Request) -> httpx2.Response:
        if pending:
            return httpx2.Response(pending.pop(0), json={"message": f"busy, {CANARY_KEY}"})
        return httpx2.Response(200, json=DOCS_BALANCE)

    return FakeDessertAPI({"/v1/balance": balance, "/v1/usage": DOCS_USAGE})


def _named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _everything_said(spans: Sequence[ReadableSpan]) -> str:
    """Every name, attribute, event and status description of `spans`, as one text to search."""
    said: list[Any] = []
    for span in spans:
        said += [span.name, dict(span.attributes or {}), span.status.description, dict(span.resource.attributes)]
        said += [(e.name, dict(e.attributes or {})) for e in span.events]
    return json.dumps(said, default=str)


async def test_a_tool_call_is_the_mcp_span_with_the_upstream_request_as_its_child(
    spans: InMemorySpanExporter, fake_api: FakeDessertAPI
) -> None:
    async with Client(build_server(_settings(), transport=fake_api.transport())) as client:
        result = await client.call_tool("dessert.get_balance", {})
    assert not result.is_error
    finished = spans.get_finished_spans()
    (call,) = _named(finished, "tools/call dessert.get_balance")
    (request,) = _named(finished, "GET /v1/balance")
    assert call.kind is SpanKind.SERVER
    assert request.kind is SpanKind.CLIENT
    assert request.parent is not None
    assert call.context is not None
    assert request.context is not None
    assert request.parent.span_id == call.context.span_id
    assert request.context.trace_id == call.context.trace_id
    assert dict(request.attributes or {}) == {
        "http.request.method": "GET",
        "url.template": "/v1/balance",
        "url.full": f"{FAKE_BASE_URL}/v1/balance",
        "server.address": "api.dessert.test",
        "server.port": 443,
        "http.response.status_code": 200,
    }
    assert request.status.status_code is StatusCode.UNSET


async def test_a_server_built_without_sdk_spans_makes_no_mcp_span_and_still_traces_its_upstream_request(
    spans: InMemorySpanExporter, fake_api: FakeDessertAPI
) -> None:
    async with Client(build_server(_settings(), transport=fake_api.transport(), sdk_spans=False)) as client:
        result = await client.call_tool("dessert.get_balance", {})
        assert (await client.list_tools()).tools
    assert not result.is_error
    names = [span.name for span in spans.get_finished_spans()]
    assert names == ["GET /v1/balance"]  # no "tools/call ...", "tools/list" or "initialize" span


async def test_a_request_to_a_plain_http_origin_without_a_port_names_port_80(spans: InMemorySpanExporter) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return streamed(httpx2.Response(200, json=DOCS_BALANCE))

    transport = httpx2.MockTransport(answer)
    async with DessertClient("http://dessert.internal", api_key=Secret(CANARY_KEY), transport=transport) as client:
        await client.get_balance()
    (request,) = _named(spans.get_finished_spans(), "GET /v1/balance")
    assert (request.attributes or {})["server.port"] == 80


async def test_retries_are_separate_attempts_counted_by_resend_count(spans: InMemorySpanExporter) -> None:
    api = _flaky(503, 429)
    async with Client(build_server(_settings(), transport=api.transport())) as client:
        result = await client.call_tool("dessert.get_balance", {})
    assert not result.is_error
    finished = spans.get_finished_spans()
    (call,) = _named(finished, "tools/call dessert.get_balance")
    attempts = sorted(_named(finished, "GET /v1/balance"), key=lambda s: s.start_time or 0)
    assert [(a.attributes or {}).get("http.request.resend_count") for a in attempts] == [None, 1, 2]
    assert [(a.attributes or {})["http.response.status_code"] for a in attempts] == [503, 429, 200]
    assert [(a.attributes or {}).get("error.type") for a in attempts] == ["503", "429", None]
    assert [(a.attributes or {}).get("dessert.error.code") for a in attempts] == [
        "upstream_unavailable",
        "rate_limited",
        None,
    ]
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert call.context is not None
    assert all(a.parent is not None and a.parent.span_id == call.context.span_id for a in attempts)
    assert_no_secret(_everything_said(finished))


async def test_a_failed_call_marks_both_spans_without_the_upstream_text(spans: InMemorySpanExporter) -> None:
    api = _flaky(401)
    async with Client(build_server(_settings(), transport=api.transport())) as client:
        result = await client.call_tool("dessert.get_balance", {})
    assert result.is_error
    finished = spans.get_finished_spans()
    (call,) = _named(finished, "tools/call dessert.get_balance")
    (request,) = _named(finished, "GET /v1/balance")
    assert call.status.status_code is StatusCode.ERROR
    assert (request.attributes or {})["dessert.error.code"] == "auth_invalid"
    said = _everything_said(finished)
    assert "busy" not in said  # the API's own message stays in the tool result
    assert_no_secret(said)


async def test_no_key_account_or_transaction_text_is_in_any_span(spans: InMemorySpanExporter) -> None:
    api = FakeDessertAPI()
    async with Client(build_server(_settings(), transport=api.transport())) as client:
        for name, args in [("dessert.get_balance", {}), ("dessert.get_usage", {"types": ["Deduction"]})]:
            assert not (await client.call_tool(name, args)).is_error
        await client.read_resource("dessert://usage")
    finished = spans.get_finished_spans()
    assert _named(finished, "GET /v1/usage")
    said = _everything_said(finished)
    assert_no_secret(said)
    for tx in DOCS_USAGE["recent_transactions"]:
        assert tx["description"] not in said
    assert "Deduction" not in said  # not even the arguments


async def test_calls_that_share_a_request_or_hit_the_cache_say_so_on_their_span(spans: InMemorySpanExporter) -> None:
    release = anyio.Event()

    async def slow(request: httpx2.Request) -> httpx2.Response:
        await release.wait()
        return streamed(httpx2.Response(200, json=DOCS_BALANCE))

    server = build_server(_settings(DESSERT_CACHE_TTL_S="60"), transport=httpx2.MockTransport(slow))
    async with Client(server) as first, Client(server) as second:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.call_tool, "dessert.get_balance", {})
            tg.start_soon(second.call_tool, "dessert.get_balance", {})
            await anyio.wait_all_tasks_blocked()
            release.set()
        await first.call_tool("dessert.get_balance", {})
    finished = spans.get_finished_spans()
    calls = _named(finished, "tools/call dessert.get_balance")
    flags = sorted(
        (bool((c.attributes or {}).get("dessert.upstream.shared")), bool((c.attributes or {}).get("dessert.cache.hit")))
        for c in calls
    )
    assert flags == [(False, False), (False, True), (True, False)]
    assert len(_named(finished, "GET /v1/balance")) == 1
