"""A real MCP Apps host for the dashboard tests and `make screenshots`: the MCP Inspector's web UI in headless Chromium.

The Inspector (2.12, from `.tools/`) runs on 127.0.0.1 with a per-run session token; dessert-mcp runs as a
subprocess over streamable HTTP; the Inspector's deep link (`serverUrl`, `autoConnect`, `openApp`, `autoOpen`)
connects, calls the tool and renders its app with no clicks. What the tests read is the app's own document, two
frames down (the Inspector's sandbox proxy, then the srcdoc iframe holding the page).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Browser, Frame, Page, sync_playwright

from tests.support.processes import free_port, free_ports, healthz, printed, started

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "node_modules" / ".bin"
NODE = TOOLS_BIN / "node"
DESSERT_MCP = Path(sys.executable).parent / "dessert-mcp"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".artifacts" / "dashboard"
UI_TIMEOUT_MS = 60_000


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "MCP_"))}
    return env | {"HOME": str(home), "NO_COLOR": "1"}


@contextmanager
def dessert_mcp_http(home: Path, *args: str, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """`dessert-mcp <args> --transport http` on a free loopback port; yields its MCP endpoint once /healthz answers."""
    port = free_port()
    argv = [str(DESSERT_MCP), *args, "--transport", "http", "--port", "{port}"]
    log = home / f"dessert-mcp-{port}.log"
    with started(argv, env=clean_env(home) | dict(env or {}), ready=healthz, log=log, port=port) as server:
        yield f"{server.url}/mcp"


@dataclass(frozen=True)
class Inspector:
    url: str
    token: str

    def deep_link(self, server_url: str, tool: str) -> str:
        """Connect to `server_url`, open the Apps tab on `tool` and call it with `{}`."""
        args = base64.urlsafe_b64encode(b"{}").decode().rstrip("=")
        return (
            f"{self.url}/?MCP_INSPECTOR_API_TOKEN={self.token}&serverUrl={quote(server_url, safe='')}"
            f"&transport=http&autoConnect={self.token}&openApp={quote(tool)}&appArgs={args}&autoOpen={self.token}"
        )


@contextmanager
def inspector_web(home: Path) -> Iterator[Inspector]:
    """`inspector --web` on 127.0.0.1 (UI, MCP Apps sandbox and app origin on free ports), no browser opened."""
    ui_port, sandbox_port, app_port = free_ports(3)
    token = secrets.token_hex(24)
    env = clean_env(home) | {
        "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOST": "127.0.0.1",
        "CLIENT_PORT": str(ui_port),
        "MCP_SANDBOX_PORT": str(sandbox_port),
        "MCP_APP_ORIGIN_PORT": str(app_port),
        "MCP_AUTO_OPEN_ENABLED": "false",
        "MCP_INSPECTOR_API_TOKEN": token,
        "MCP_INSPECTOR_SECRET_STORE": "memory",
    }
    argv = [str(NODE), str(TOOLS_BIN / "inspector"), "--web"]
    log = home / f"inspector-{ui_port}.log"
    with started(argv, env=env, ready=printed(r"Auth token: \S+"), log=log, cwd=home):
        yield Inspector(url=f"http://127.0.0.1:{ui_port}", token=token)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless. Playwright's launch gives it a fresh temporary profile (--user-data-dir)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing; run `make browser` (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def app_frame(page: Page) -> Frame:
    """The dashboard's document: the srcdoc frame inside the Inspector's sandbox proxy."""
    page.wait_for_selector('[data-testid="apps-form"][data-app-status="ready"]', timeout=UI_TIMEOUT_MS)
    frames = [f for f in page.frames if f.url == "about:srcdoc"]
    if not frames:  # "ready" can be dispatched before the srcdoc frame's navigation
        srcdoc = page.wait_for_event("framenavigated", lambda f: f.url == "about:srcdoc", timeout=UI_TIMEOUT_MS)
        frames = [srcdoc]
    (frame,) = frames
    return frame


def open_app(page: Page, inspector: Inspector, server_url: str, tool: str) -> Frame:
    """Load the deep link, wait for the connection and the app, then for the dashboard to show both tools' data."""
    page.goto(inspector.deep_link(server_url, tool))
    status = page.locator('[data-testid="connection-status"]')
    status.and_(page.locator('[data-status="connected"]')).wait_for(timeout=UI_TIMEOUT_MS)
    frame = app_frame(page)
    frame.wait_for_selector('main[data-state="ready"]', timeout=UI_TIMEOUT_MS)
    frame.wait_for_selector('[data-testid="balance-credits"]', timeout=UI_TIMEOUT_MS)
    frame.wait_for_selector('[data-testid="tx-row"]', timeout=UI_TIMEOUT_MS)
    return frame


def set_host_theme(page: Page, frame: Frame, theme: str) -> None:
    """Flip the Inspector's colour scheme until the app reports `theme` (the host pushes it as host context)."""
    if frame.evaluate("document.documentElement.dataset.theme") != theme:
        page.get_by_label("Toggle color scheme").click()
    frame.wait_for_selector(f'html[data-theme="{theme}"]', timeout=UI_TIMEOUT_MS)
