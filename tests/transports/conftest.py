"""Fixtures for the HTTP transports: the sandbox API, and dessert-mcp served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn

from dessert_mcp.config import Settings
from dessert_mcp.sandbox import ThreadedSandbox
from dessert_mcp.transports import HTTPOptions, build_app

STARTUP_TIMEOUT_S = 20.0


@pytest.fixture
def sandbox() -> Iterator[ThreadedSandbox]:
    """A fresh sandbox per test (overriding the session-wide one), so request counts start at zero."""
    with ThreadedSandbox() as sb:
        yield sb


def sandbox_settings(sandbox: ThreadedSandbox, *, key: str | None = None) -> Settings:
    settings = Settings.from_env({}, log_level="WARNING", tool_names="dotted")
    return replace(settings, base_url=sandbox.url).with_key(key or sandbox.key)


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=2, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def serve(sandbox: ThreadedSandbox) -> Iterator[Callable[..., str]]:
    """`serve(transport="http", key=None, transport_seam=None, **options)` -> base URL of a running server."""
    with ExitStack() as stack:

        def start(*, key: str | None = None, transport_seam: httpx2.AsyncBaseTransport | None = None, **kw: Any) -> str:
            options = HTTPOptions(**kw).check()
            app = build_app(sandbox_settings(sandbox, key=key), options, transport=transport_seam)
            url: str = stack.enter_context(serve_app(app))
            return url

        yield start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sandbox_env(sandbox: ThreadedSandbox, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    env |= {"DESSERT_API_KEY": sandbox.key, "DESSERT_API_BASE_URL": sandbox.url, "DESSERT_MCP_LOG_LEVEL": "WARNING"}
    return env | extra


@pytest.fixture
def server_env(sandbox: ThreadedSandbox) -> Callable[..., dict[str, str]]:
    """`server_env(**extra)`: this environment, wired to the sandbox, without the caller's DESSERT_* variables."""
    return lambda **extra: sandbox_env(sandbox, **extra)


@pytest.fixture(name="cli_server")
def cli_server_fixture() -> Callable[..., Any]:
    return cli_server


@contextmanager
def cli_server(args: list[str], env: Mapping[str, str], stderr_path: Path) -> Iterator[str]:
    """`dessert-mcp <args> --port <free>` as a subprocess; yields its base URL once /healthz answers."""
    port = free_port()
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dessert_mcp", *args, "--port", str(port)],
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                assert proc.poll() is None, f"server exited early:\n{stderr_path.read_text()}"
                assert time.monotonic() < deadline, f"server did not start:\n{stderr_path.read_text()}"
                try:
                    if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def serve_asgi() -> Callable[[Any], Any]:
    """`with serve_asgi(app) as base_url:` for tests that control the server's shutdown themselves."""
    return serve_app


@pytest.fixture
def wired_settings(sandbox: ThreadedSandbox) -> Settings:
    return sandbox_settings(sandbox)
