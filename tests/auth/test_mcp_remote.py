"""`mcp-remote` (npm), the stdio<->HTTP proxy that desktop hosts put in front of a remote server, runs the whole
OAuth flow against `dessert-mcp --auth oauth`: discovery, dynamic registration, PKCE, its own callback port on
127.0.0.1, with headless Chromium filling in our sign-in page; then the python SDK speaks MCP over its stdio.

mcp-remote is pinned and installed by the test itself into `.cache/mcp-remote/` (git-ignored) with the machine's
npm, and runs on the Node 22 in `.tools/` (`make foreign-tools`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from playwright.async_api import async_playwright

from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import CHROMIUM, CHROMIUM_FLAGS, oauth_env
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import free_port
from tests.support.servers import cli_server

MCP_REMOTE_VERSION = "0.15.1"
ROOT = Path(__file__).resolve().parents[2]
INSTALL_DIR = ROOT / ".cache" / "mcp-remote"
PROXY = INSTALL_DIR / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
NODE = ROOT / ".tools" / "node_modules" / ".bin" / "node"
FLOW_TIMEOUT_S = 90
AUTHORIZE_LINE = re.compile(r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)$", re.MULTILINE)


@pytest.fixture(scope="session")
def mcp_remote() -> Path:
    """mcp-remote's entry point, installed once (pinned) into `.cache/mcp-remote/`."""
    assert NODE.exists(), "Node 22 is missing: run `make foreign-tools`"
    installed = INSTALL_DIR / "node_modules" / "mcp-remote" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != MCP_REMOTE_VERSION:
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        (INSTALL_DIR / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"mcp-remote@{MCP_REMOTE_VERSION}"],
            cwd=INSTALL_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    assert PROXY.exists()
    return PROXY


class StderrReader:
    """mcp-remote's stderr through a pipe: every line kept, and the authorization URL handed over when printed."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self._read = os.fdopen(read_fd, "r")
        self.errlog = os.fdopen(write_fd, "w")  # the child's stderr (stdio_client passes it to the process)
        self.lines: list[str] = []
        self.url: str | None = None
        self.url_seen = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self._read:
            self.lines.append(line)
            found = AUTHORIZE_LINE.match(line.strip())
            if found and self.url is None:
                self.url = found.group(1)
                self.url_seen.set()

    def close(self) -> str:
        self.errlog.close()  # our copy; the pipe ends when the child's copy closes too
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "mcp-remote's stderr stayed open after it stopped"
        self._read.close()
        return "".join(self.lines)


async def sign_in(authorization_url: str, key: str, profile: Path, callback_prefix: str) -> dict[str, Any]:
    """The person, in headless Chromium: our sign-in page, the key, Allow; the redirect lands on mcp-remote."""
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await context.new_page()
            await page.goto(authorization_url)
            await page.fill("#api_key", key)
            await page.click("#check")
            await page.wait_for_selector("#allow")
            balance = await page.inner_text("#balance")
            pages = [await page.content()]
            await page.click("#allow")
            await page.wait_for_url(lambda url: url.startswith(callback_prefix))
            landed = await page.inner_text("body")
        finally:
            await context.close()
    return {"balance": balance, "pages": pages, "landed": landed}


def proxy_command(mcp_remote: Path, mcp_url: str, callback_port: int, tmp_path: Path) -> StdioServerParameters:
    """`node proxy.js <url> <callback port> --host 127.0.0.1` with its own HOME and token store under tmp_path."""
    return StdioServerParameters(
        command=str(NODE),
        # The callback port given explicitly (free, and known to the test) and the callback host as an address
        # rather than `localhost`: loopback only, on IPv4.
        args=[str(mcp_remote), mcp_url, str(callback_port), "--host", "127.0.0.1"],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),
            "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth"),  # a fresh token store, kept across both starts
            # mcp-remote opens the URL with the `open` package's xdg-open, which (no desktop, no DISPLAY) runs
            # $BROWSER: `true` opens nothing and reports success; the test's own Chromium opens the URL instead.
            "BROWSER": "true",
        },
    )


async def test_mcp_remote_registers_signs_in_through_chromium_and_proxies_both_tools_over_stdio(
    canary_api: ThreadedFaultySandbox, encryption_key: str, tmp_path: Path, mcp_remote: Path
) -> None:
    port, callback_port = free_port(), free_port()
    public = f"http://127.0.0.1:{port}"
    env = oauth_env(
        canary_api,
        DESSERT_MCP_ENCRYPTION_KEY=encryption_key,
        DESSERT_MCP_DATABASE_URL=f"sqlite:///{tmp_path / 'auth.db'}",
        DESSERT_MCP_LOG_LEVEL="DEBUG",
    )
    args = ["--transport", "http", "--auth", "oauth", "--public-url", public]
    (tmp_path / "home").mkdir()
    proxy = proxy_command(mcp_remote, public + "/mcp", callback_port, tmp_path)
    first, again = StderrReader(), StderrReader()
    signed_in: dict[str, Any] = {}
    with cli_server(args, env, tmp_path / "server.log", port=port):
        try:
            with anyio.fail_after(FLOW_TIMEOUT_S):
                async with anyio.create_task_group() as tg:

                    async def person() -> None:
                        await anyio.to_thread.run_sync(first.url_seen.wait)
                        assert first.url is not None
                        callback = f"http://127.0.0.1:{callback_port}/"
                        signed_in.update(await sign_in(first.url, CANARY_KEY, tmp_path / "chromium", callback))

                    tg.start_soon(person)
                    # mcp-remote signs in before it answers the client: entering the client waits for the person.
                    async with Client(stdio_client(proxy, errlog=first.errlog)) as client:
                        tools = await client.list_tools()
                        balance = await client.call_tool("dessert.get_balance", {})
                        usage = await client.call_tool("dessert.get_usage", {"limit": 2})
        finally:
            first_log = first.close()
        try:
            # The host restarted: mcp-remote starts from the tokens it stored, with no browser this time.
            with anyio.fail_after(FLOW_TIMEOUT_S):
                async with Client(stdio_client(proxy, errlog=again.errlog)) as client:
                    balance_again = await client.call_tool("dessert.get_balance", {})
        finally:
            again_log = again.close()
    assert sorted(t.name for t in tools.tools) == [
        "dessert.get_balance",
        "dessert.get_spend",
        "dessert.get_usage",
        "dessert.set_alerts",
    ]
    for result in (balance, balance_again):
        assert not result.is_error, result
        assert result.structured_content is not None
        assert result.structured_content["credits_balance"] == 205
    assert not usage.is_error, usage
    assert usage.structured_content is not None
    assert usage.structured_content["recent_transactions"][0]["balance_after"] == 205
    assert signed_in["balance"] == "205"
    assert "Authorization successful" in signed_in["landed"]
    assert first.url is not None
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{callback_port}%2Foauth%2Fcallback" in first.url
    assert "code_challenge_method=S256" in first.url
    assert "scope=dessert%3Aread" in first.url
    assert again.url is None, "the second start signed in again instead of using the stored tokens"
    assert list((tmp_path / "mcp-auth").rglob("*_tokens.json")), "mcp-remote keeps its tokens in its config dir"
    server_log = (tmp_path / "server.log").read_text()
    for text in (first_log, again_log, server_log, *signed_in["pages"], repr(balance), repr(usage)):
        assert_no_secret(text)
