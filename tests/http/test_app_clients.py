"""The python SDK's own streamable HTTP and SSE clients against dessert-mcp, and its one Dessert client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from dessert_mcp.config import Secret, Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from tests.support.servers import serve_app

TOKEN = "tok_" + "5" * 28


async def exercise(client: Client) -> None:
    """List the tools and call both, as a host would."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == {"dessert.get_balance", "dessert.get_usage", "dessert.get_spend"}
    balance = await client.call_tool("dessert.get_balance", {})
    assert not balance.is_error
    assert balance.structured_content is not None
    assert balance.structured_content["credits_balance"] == 205
    usage = await client.call_tool("dessert_get_usage", {"limit": 2})
    assert not usage.is_error
    assert usage.structured_content is not None
    assert len(usage.structured_content["recent_transactions"]) == 2


@pytest.mark.parametrize(
    ("stateless", "mode"),
    [
        pytest.param(False, "legacy", id="handshake-stateful"),
        pytest.param(True, "legacy", id="handshake-stateless"),
        pytest.param(False, "2026-07-28", id="modern"),
        pytest.param(False, "auto", id="auto"),
    ],
)
async def test_the_sdk_streamable_http_client_lists_and_calls_both_tools(
    serve: Callable[..., str], stateless: bool, mode: str
) -> None:
    url = serve(stateful=not stateless) + "/mcp"
    async with Client(url, mode=mode) as client:
        await exercise(client)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="handshake"),
        pytest.param({"MCP-Protocol-Version": "2025-11-25"}, id="handshake-version"),
        pytest.param({"MCP-Protocol-Version": "2026-07-28"}, id="2026-07-28"),
    ],
)
async def test_a_stateless_get_for_the_event_stream_is_refused_405_allowing_post(
    serve: Callable[..., str], headers: dict[str, str]
) -> None:
    # Nothing can ever be sent on a stateless endpoint's stream: held open, it kept every client waiting on it.
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        http.stream("GET", serve() + "/mcp", headers={"Accept": "text/event-stream", **headers}) as response,
    ):
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert "POST" in (await response.aread()).decode()


async def test_a_stateful_session_keeps_its_event_stream(serve: Callable[..., str]) -> None:
    url = serve(stateful=True) + "/mcp"
    accept = {"Accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with httpx2.AsyncClient(timeout=60) as http:
        session = (await http.post(url, json=initialize, headers=accept)).headers["mcp-session-id"]
        ids = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=accept | ids)
        async with http.stream("GET", url, headers={"Accept": "text/event-stream", **ids}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
        await http.delete(url, headers=ids)


async def test_the_sdk_sse_client_lists_and_calls_both_tools(serve: Callable[..., str]) -> None:
    url = serve(transport="sse") + "/sse"
    async with Client(sse_client(url)) as client:
        await exercise(client)


async def test_clients_with_the_bearer_token_are_served_over_both_transports(serve: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    http_url = serve(auth_token=Secret(TOKEN)) + "/mcp"
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(http_url, http_client=http), mode="legacy") as client,
    ):
        await exercise(client)
    sse_url = serve(transport="sse", auth_token=Secret(TOKEN)) + "/sse"
    async with Client(sse_client(sse_url, headers=headers)) as client:
        await exercise(client)


class CountingTransport(httpx2.AsyncBaseTransport):
    """The real network to the sandbox, counting requests and how often the client using it was closed."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.requests = 0
        self.closed = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed += 1
        await self._inner.aclose()


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_one_dessert_http_client_serves_every_session_until_shutdown(
    wired_settings: Settings, transport: Any
) -> None:
    counting = CountingTransport()
    app = build_app(wired_settings, HTTPOptions(transport=transport).check(), transport=counting)
    with serve_app(app) as base:
        for _ in range(3):  # three sessions, one after the other
            if transport == "http":
                async with Client(base + "/mcp", mode="legacy") as client:
                    assert not (await client.call_tool("dessert.get_balance", {})).is_error
            else:
                async with Client(sse_client(base + "/sse")) as client:
                    assert not (await client.call_tool("dessert.get_balance", {})).is_error
        async with Client(base + "/mcp" if transport == "http" else sse_client(base + "/sse")) as client:
            assert not (await client.call_tool("dessert.get_usage", {})).is_error
        assert counting.requests == 4
        assert counting.closed == 0  # no per-session or per-request client was opened and closed
    assert counting.closed == 1  # closed once, at shutdown
