"""Shared harness for the reliability suite: a canary-keyed sandbox, and the server over three transports."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.types import CallToolResult

from dessert_mcp.cli.hosts import server_command
from dessert_mcp.config import Settings
from dessert_mcp.tools import build_server
from tests.support.faults import ThreadedFaultySandbox, refused_port, unanswered_port

# Small numbers keep the whole matrix fast; the policy is the same as with the defaults.
TIMEOUT_S = 2.0
BACKOFF_S = 0.05
TRANSPORTS = ("memory", "stdio", "http")


def canary_key() -> str:
    return f"dsk_live_canary_{secrets.token_hex(16)}"


def matrix_settings(base_url: str, key: str) -> Settings:
    return Settings(base_url=base_url, timeout_s=TIMEOUT_S, backoff_s=BACKOFF_S, log_level="DEBUG").with_key(key)


def settings_env(settings: Settings) -> dict[str, str]:
    assert settings.api_key is not None
    return get_default_environment() | {
        "DESSERT_API_KEY": settings.api_key.get(),
        "DESSERT_API_BASE_URL": settings.base_url,
        "DESSERT_TIMEOUT_S": str(settings.timeout_s),
        "DESSERT_BACKOFF_S": str(settings.backoff_s),
        "DESSERT_MAX_ATTEMPTS": str(settings.max_attempts),
        "DESSERT_MCP_LOG_LEVEL": settings.log_level,
    }


class HTTPServer:
    """`build_server(settings).streamable_http_app(stateless_http=True)` under uvicorn on a thread, 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/mcp"
        app = build_server(settings).streamable_http_app(stateless_http=True)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> HTTPServer:
        self._thread.start()
        started = threading.Event()
        # uvicorn flips `started` once it serves; wait on it with a bound instead of a fixed sleep.
        for _ in range(1000):
            if self._server.started:
                started.set()
                break
            threading.Event().wait(0.01)
        assert started.is_set(), "uvicorn did not start"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@dataclass
class Upstreams:
    """The sandbox (keyed with a canary), plus loopback origins that refuse or never answer connections."""

    sandbox: ThreadedFaultySandbox
    refused: str
    unanswered: str
    key: str
    _http: dict[str, HTTPServer] = field(default_factory=dict)

    def url(self, upstream: str) -> str:
        return {"sandbox": self.sandbox.url, "refused": self.refused, "unanswered": self.unanswered}[upstream]

    def http_url(self, settings: Settings) -> str:
        if settings.base_url not in self._http:
            self._http[settings.base_url] = HTTPServer(settings).start()
        return self._http[settings.base_url].url


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    key = canary_key()
    with ThreadedFaultySandbox(key=key) as sandbox, unanswered_port() as unanswered:
        up = Upstreams(sandbox=sandbox, refused=refused_port(), unanswered=unanswered, key=key)
        try:
            yield up
        finally:
            for server in up._http.values():
                server.stop()


@contextlib.asynccontextmanager
async def connect(transport: str, settings: Settings, upstreams: Upstreams, errlog: Path) -> AsyncIterator[Client]:
    """A real MCP client on the server built from `settings`, over `transport`."""
    if transport == "memory":
        async with Client(build_server(settings)) as client:
            yield client
    elif transport == "stdio":
        command, args = server_command()
        params = StdioServerParameters(command=command, args=args, env=settings_env(settings))
        with errlog.open("a") as log:
            async with Client(stdio_client(params, errlog=log)) as client:
                yield client
    else:
        async with Client(upstreams.http_url(settings)) as client:
            yield client


def result_text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def error_info(result: CallToolResult) -> dict[str, Any]:
    """The JSON object on the last line of a tool error."""
    assert result.is_error, result_text(result)
    assert result.structured_content is None
    info: dict[str, Any] = json.loads(result_text(result).rsplit("\n", 1)[-1])
    return info
