"""How the MCP endpoint answers, seen through the SDK's own client over real HTTP: one JSON body for an ordinary
stateless request, a stream wherever one is needed (a 2026-07-28 `subscriptions/listen`, a stateful session's)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

JSON = "application/json"
STREAM = "text/event-stream"


@dataclass
class Answer:
    http_method: str
    rpc_method: str  # "" for a GET or a body without one
    is_request: bool  # a JSON-RPC request (it has an id), owed an answer
    content_type: str


@dataclass
class Seen:
    answers: list[Answer] = field(default_factory=list)
    stream_opened: anyio.Event = field(default_factory=anyio.Event)  # a GET answered with an event stream

    def types_of(self, rpc_method: str) -> set[str]:
        return {a.content_type for a in self.answers if a.is_request and a.rpc_method == rpc_method}


@asynccontextmanager
async def watched(url: str, mode: str, **client_options: Any) -> AsyncIterator[tuple[Client, Seen]]:
    """The SDK's client on an HTTP client that notes each answer's content type, by the JSON-RPC message asked."""
    seen = Seen()

    async def note(response: httpx2.Response) -> None:
        body = json.loads(response.request.content) if response.request.content else {}
        content_type = response.headers.get("content-type", "").split(";")[0]
        seen.answers.append(Answer(response.request.method, body.get("method", ""), "id" in body, content_type))
        if response.request.method == "GET" and content_type == STREAM:
            seen.stream_opened.set()

    async with (
        httpx2.AsyncClient(event_hooks={"response": [note]}) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **client_options) as client,
    ):
        yield client, seen


async def call_both_tools(client: Client) -> None:
    await client.list_tools()
    for name in ("dessert.get_balance", "dessert.get_usage"):
        result = await client.call_tool(name, {})
        assert not result.is_error, result


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_stateless_requests_are_answered_with_one_json_body_in_both_eras(
    serve: Callable[..., str], mode: str
) -> None:
    async with watched(serve() + "/mcp", mode) as (client, seen):
        await call_both_tools(client)
    assert seen.types_of("tools/call") == {JSON}
    assert seen.types_of("tools/list") == {JSON}
    assert {a.content_type for a in seen.answers if a.is_request} == {JSON}


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
async def test_a_2026_listen_request_is_answered_with_an_event_stream(
    serve: Callable[..., str], stateful: bool
) -> None:
    async with watched(serve(stateful=stateful) + "/mcp", "2026-07-28") as (client, seen):
        async with client.listen(tools_list_changed=True, resources_list_changed=True) as subscription:
            assert subscription.honored is not None  # acknowledged: the stream is open
        await call_both_tools(client)
    assert seen.types_of("subscriptions/listen") == {STREAM}
    assert seen.types_of("tools/call") == {JSON}


async def test_a_stateful_session_keeps_its_server_to_client_stream_and_streams_its_answers(
    serve: Callable[..., str],
) -> None:
    async with watched(serve(stateful=True) + "/mcp", "legacy") as (client, seen):
        await call_both_tools(client)
        with anyio.fail_after(60):
            await seen.stream_opened.wait()
    assert seen.types_of("tools/call") == {STREAM}


async def test_no_tool_sends_progress_or_a_message_before_its_result(serve: Callable[..., str]) -> None:
    """Stateless answers are single JSON bodies, which carry nothing sent before the result. A tool that starts
    reporting progress or logging to the client needs its stateless calls answered with a stream (http/app.py)."""
    sent: list[Any] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        sent.append(("progress", progress, message))

    async def logged(params: Any) -> None:
        sent.append(("log", params))

    # A stateful session streams each answer, so anything sent before a result would arrive here.
    async with watched(serve(stateful=True) + "/mcp", "legacy", logging_callback=logged) as (client, seen):
        await client.list_tools()
        for name in ("dessert.get_balance", "dessert.get_usage"):
            result = await client.call_tool(name, {}, progress_callback=progress)
            assert not result.is_error, result
    assert seen.types_of("tools/call") == {STREAM}
    assert sent == []
