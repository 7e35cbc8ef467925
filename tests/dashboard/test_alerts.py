"""The dashboard shows the account's active alerts, the ones dessert.get_balance carries, in the MCP Inspector's web
UI in headless Chromium. The server runs in this process with a balance threshold every balance is under."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.sync_api import Page

from dessert_mcp.alerts import ALERTS_URI
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.listing import tool_names_for
from dessert_mcp.service import DessertService
from tests.support import STARTUP_TIMEOUT_S
from tests.support.faults import ThreadedFaultySandbox
from tests.support.inspector import Inspector, open_app
from tests.support.servers import sandbox_settings, serve_app

BALANCE, _, _ = tool_names_for("auto")
WAIT_S = STARTUP_TIMEOUT_S


async def _fire(url: str) -> None:
    """Call get_balance once and wait until the server says its alerts changed (the first balance fired one)."""
    async with (
        Client(streamable_http_client(url)) as client,
        client.listen(resource_subscriptions=[ALERTS_URI]) as subscription,
    ):
        assert (await client.call_tool(BALANCE, {})).is_error is False
        with anyio.fail_after(WAIT_S):
            await anext(aiter(subscription))


@pytest.fixture
def alerted() -> Iterator[str]:
    """dessert-mcp whose account has an active balance_below alert: the MCP endpoint URL."""
    with ThreadedFaultySandbox() as sandbox:
        settings = replace(sandbox_settings(sandbox, ledger_poll=False, alert_balance_below=10**9), tool_names="auto")
        service = DessertService(settings, ledger=InMemoryLedger())
        with serve_app(build_app(settings, HTTPOptions(), service=service)) as url:
            # Playwright's sync API keeps an event loop on this thread: the client runs on another.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(anyio.run, _fire, url + "/mcp").result(timeout=2 * WAIT_S)
            yield url + "/mcp"


def test_the_dashboard_shows_the_accounts_active_alerts(
    page: Page, inspector: Inspector, alerted: str, artifact: Path
) -> None:
    frame = open_app(page, inspector, alerted, BALANCE)
    page.screenshot(path=artifact, full_page=True)

    box = frame.locator('[data-testid="account-alerts"]')
    assert box.is_visible()
    assert "Active alert" in (box.text_content() or "")
    lines = [line.strip() for line in frame.locator('[data-testid="account-alert"]').all_text_contents()]
    assert len(lines) == 1
    assert lines[0].startswith("balance_below: 205 < 1e+09 since ")
