"""A person opening the server's URLs in a browser gets one line of explanation; MCP clients get MCP."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dessert_mcp.http.app import BROWSER_HINT
from tests.support.inspector import CHROMIUM, CHROMIUM_ARGS

# What Chromium sends when a URL is typed into the address bar.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_a_browser_opening_the_mcp_endpoint_is_told_what_it_is_in_one_line(
    serve: Callable[..., str], stateful: bool
) -> None:
    response = httpx2.get(serve(stateful=stateful) + "/mcp", headers={"Accept": BROWSER_ACCEPT}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == BROWSER_HINT
    assert response.text.count("\n") == 1
    assert "MCP endpoint" in response.text


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_a_browser_opening_the_root_is_told_where_clients_connect(serve: Callable[..., str], transport: str) -> None:
    response = httpx2.get(serve(transport=transport) + "/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200
    assert ("/mcp" if transport == "http" else "/sse") in response.text
    assert response.text.count("\n") == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Accept": "text/event-stream"}, id="event-stream"),
        pytest.param({"Accept": "text/html, text/event-stream"}, id="html-and-event-stream"),
        pytest.param({"Accept": BROWSER_ACCEPT, "Mcp-Session-Id": "abc"}, id="session-id"),
        pytest.param({"Accept": BROWSER_ACCEPT, "MCP-Protocol-Version": "2025-11-25"}, id="protocol-version"),
    ],
)
def test_requests_that_look_like_mcp_reach_the_mcp_transport(
    serve: Callable[..., str], headers: dict[str, str]
) -> None:
    # Stateful without a valid session: the SDK's own answer (a 4xx), never the hint.
    response = httpx2.get(serve(stateful=True) + "/mcp", headers=headers, timeout=10)
    assert response.text != BROWSER_HINT
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
async def test_the_sdk_client_still_lists_and_calls_over_the_same_endpoint(
    serve: Callable[..., str], stateful: bool
) -> None:
    async with Client(streamable_http_client(serve(stateful=stateful) + "/mcp")) as client:
        assert len((await client.list_tools()).tools) == 3
        assert (await client.call_tool("dessert.get_balance", {})).structured_content is not None


def test_chromium_shows_the_line(serve: Callable[..., str], tmp_path: Path) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing; run `make browser`"
    shown = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_ARGS, f"--user-data-dir={tmp_path}", "--dump-dom", serve() + "/mcp"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert BROWSER_HINT.strip() in shown.stdout, shown.stdout + shown.stderr
