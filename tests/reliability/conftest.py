"""Shared harness for the reliability suite: a canary-keyed sandbox, and the server over three transports."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from dessert_mcp.cli.hosts import server_command
from dessert_mcp.config import Settings
from dessert_mcp.http.options import AUTH_TOKEN_ENV
from dessert_mcp.tools import build_server
from tests.support.faults import ThreadedFaultySandbox, refused_port, unanswered_port
from tests.support.measured import host_default_env
from tests.support.servers import cli_process

# Small numbers keep the whole matrix fast; the policy is the same as with the defaults.
TIMEOUT_S = 2.0
BACKOFF_S = 0.05
TRANSPORTS = ("memory", "stdio", "http")
# An MCP client's own bound on one HTTP request: far beyond any case's deadline, so a case never meets it.
CLIENT_TIMEOUT_S = 60.0


def canary_key() -> str:
    return f"dsk_live_canary_{secrets.token_hex(16)}"


def matrix_settings(base_url: str, key: str) -> Settings:
    return Settings(base_url=base_url, timeout_s=TIMEOUT_S, backoff_s=BACKOFF_S, log_level="DEBUG").with_key(key)


def settings_env(settings: Settings) -> dict[str, str]:
    assert settings.api_key is not None
    return host_default_env() | {
        "DESSERT_API_KEY": settings.api_key.get(),
        "DESSERT_API_BASE_URL": settings.base_url,
        "DESSERT_TIMEOUT_S": str(settings.timeout_s),
        "DESSERT_BACKOFF_S": str(settings.backoff_s),
        "DESSERT_MAX_ATTEMPTS": str(settings.max_attempts),
        "DESSERT_MCP_LOG_LEVEL": settings.log_level,
    }


class HTTPServer:
    """`dessert-mcp --transport http` as users run it (a subprocess: the token guard, the Host/Origin checks, the
    body cap, readiness and the shared lifespan all in the path), with DESSERT_MCP_AUTH_TOKEN set, so every call
    brings the server's token. Its stderr goes to one file, which every case that used it checks."""

    def __init__(self, settings: Settings, errlog: Path) -> None:
        self.errlog = errlog
        self.token = f"server-token-{secrets.token_hex(16)}"
        self._process = contextlib.ExitStack()
        env = settings_env(settings) | {AUTH_TOKEN_ENV: self.token}
        base, self.pid = self._process.enter_context(cli_process(["--transport", "http"], env, errlog))
        self.url = base + "/mcp"

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """A real MCP client on the server, sending its token."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=CLIENT_TIMEOUT_S) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            yield client

    def stop(self) -> None:
        self._process.close()


class StdioServer:
    """`dessert-mcp` over stdio, as a host launches it, kept for every call made with the same settings.

    A process start (Python, then the SDK's imports) costs more than most cases: the process is started once, and
    its MCP client session lives on a thread of its own, with its own event loop, which any test's loop calls into.
    Its stderr goes to one file, which every case that used it checks.
    """

    def __init__(self, settings: Settings, errlog: Path) -> None:
        self.errlog = errlog
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stop = asyncio.Event()
        ready: concurrent.futures.Future[Client] = concurrent.futures.Future()
        self._held = asyncio.run_coroutine_threadsafe(self._hold(settings, ready), self._loop)
        self._client = ready.result(timeout=60)

    async def _hold(self, settings: Settings, ready: concurrent.futures.Future[Client]) -> None:
        command, args = server_command()
        params = StdioServerParameters(command=command, args=args, env=settings_env(settings))
        try:
            with self.errlog.open("a") as log:
                async with Client(stdio_client(params, errlog=log)) as client:
                    ready.set_result(client)
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """The call, made by the session's own loop; cancelling the caller cancels the call there too."""
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._client.call_tool(name, arguments), self._loop)
        )

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._held.result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def _server_key(settings: Settings) -> tuple[str, float]:
    return settings.base_url, settings.timeout_s


@dataclass
class Upstreams:
    """The sandbox (keyed with a canary), plus loopback origins that refuse or never answer connections."""

    sandbox: ThreadedFaultySandbox
    refused: str
    unanswered: str
    key: str
    logs: Path
    _http: dict[tuple[str, float], HTTPServer] = field(default_factory=dict)
    _stdio: dict[tuple[str, float], StdioServer] = field(default_factory=dict)

    def url(self, upstream: str) -> str:
        return {"sandbox": self.sandbox.url, "refused": self.refused, "unanswered": self.unanswered}[upstream]

    def http(self, settings: Settings) -> HTTPServer:
        if _server_key(settings) not in self._http:
            errlog = self.logs / f"http-{len(self._http)}.log"
            self._http[_server_key(settings)] = HTTPServer(settings, errlog)
        return self._http[_server_key(settings)]

    def stdio(self, settings: Settings) -> StdioServer:
        if _server_key(settings) not in self._stdio:
            errlog = self.logs / f"stdio-{len(self._stdio)}.log"
            self._stdio[_server_key(settings)] = StdioServer(settings, errlog)
        return self._stdio[_server_key(settings)]


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    """For the session: the servers it starts (one per settings and transport) serve every module's cases."""
    key = canary_key()
    logs = tmp_path_factory.mktemp("server-logs")
    with ThreadedFaultySandbox(key=key) as sandbox, unanswered_port() as unanswered:
        up = Upstreams(sandbox=sandbox, refused=refused_port(), unanswered=unanswered, key=key, logs=logs)
        try:
            yield up
        finally:
            for stdio in up._stdio.values():
                stdio.stop()
            for server in up._http.values():
                server.stop()


@contextlib.asynccontextmanager
async def connect(
    transport: str, settings: Settings, upstreams: Upstreams, errlog: Path, *, own_process: bool = False
) -> AsyncIterator[Any]:
    """A real MCP client on the server built from `settings`, over `transport`: a fresh server in memory; over stdio
    the session's process for these settings (its whole stderr so far is copied to `errlog` afterwards), or with
    `own_process` one started for this block alone (its stderr in `errlog`), for a test that needs no other
    process holding connections to the sandbox; over streamable HTTP the session's `dessert-mcp --transport http`
    for these settings (its stderr copied likewise)."""
    if transport == "memory":
        async with Client(build_server(settings)) as client:
            yield client
    elif transport == "stdio" and own_process:
        command, args = server_command()
        params = StdioServerParameters(command=command, args=args, env=settings_env(settings))
        with errlog.open("a") as log:
            async with Client(stdio_client(params, errlog=log)) as client:
                yield client
    elif transport == "stdio":
        stdio = upstreams.stdio(settings)
        try:
            yield stdio
        finally:
            shutil.copyfile(stdio.errlog, errlog)
    else:
        http = upstreams.http(settings)
        try:
            async with http.client() as client:
                yield client
        finally:
            shutil.copyfile(http.errlog, errlog)


def result_text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def error_info(result: CallToolResult) -> dict[str, Any]:
    """The JSON object on the last line of a tool error."""
    assert result.is_error, result_text(result)
    assert result.structured_content is None
    info: dict[str, Any] = json.loads(result_text(result).rsplit("\n", 1)[-1])
    return info
