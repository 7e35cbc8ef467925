"""Servers on loopback for the tests: an ASGI app under uvicorn on a thread, and `dessert-mcp` as a subprocess."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from dessert_mcp.config import Settings
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import free_port, healthz, started


def sandbox_settings(sandbox: ThreadedFaultySandbox, *, key: str | None = None, **overrides: Any) -> Settings:
    settings = Settings.from_env({}, log_level="WARNING", tool_names="dotted")
    return replace(settings, base_url=sandbox.url, **overrides).with_key(key or sandbox.key)


class ServedApp:
    """An ASGI app under uvicorn on a free 127.0.0.1 port in a thread, serving from construction until `join()`.

    The socket listens before uvicorn starts, so early requests wait in the backlog instead of failing. Stopping is
    two steps, so that many servers can be told to stop first and then waited for together.
    """

    def __init__(self, app: Any, sock: socket.socket | None = None, **config: Any) -> None:
        """`sock`: a socket bound already (when the app must know its URL before it is built); `config`: more
        `uvicorn.Config` arguments, such as TLS files."""
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self._sock.listen(512)
        config = {"log_config": None, "lifespan": "on", "timeout_graceful_shutdown": 2, "access_log": False} | config
        uvicorn_config = uvicorn.Config(app, **config)
        self._server = uvicorn.Server(uvicorn_config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def request_stop(self) -> None:
        self._server.should_exit = True

    def join(self) -> None:
        self.request_stop()
        self._thread.join(timeout=10)
        self._sock.close()


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a thread; yields its base URL at once."""
    served = ServedApp(app)
    try:
        yield served.url
    finally:
        served.join()


def worker_pids(log: Path) -> set[str]:
    """The worker processes that answered a POST /mcp with 200, from a server's DEBUG log."""
    return set(re.findall(r"POST /mcp answered 200 by worker pid (\d+)", log.read_text()))


def sandbox_env(sandbox: ThreadedFaultySandbox, **extra: str) -> dict[str, str]:
    """This environment without the caller's DESSERT_* variables, wired to the sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    env |= {"DESSERT_API_KEY": sandbox.key, "DESSERT_API_BASE_URL": sandbox.url, "DESSERT_MCP_LOG_LEVEL": "WARNING"}
    return env | extra


@contextmanager
def cli_server(args: list[str], env: Mapping[str, str], stderr_path: Path, *, port: int | None = None) -> Iterator[str]:
    """`dessert-mcp <args> --port <port or a free one>` as a subprocess; yields its base URL once /healthz answers."""
    with cli_process(args, env, stderr_path, port=port) as (url, _pid):
        yield url


@contextmanager
def cli_process(
    args: list[str], env: Mapping[str, str], stderr_path: Path, *, port: int | None = None
) -> Iterator[tuple[str, int]]:
    """As `cli_server`, yielding the base URL and the server's process id."""
    argv = [sys.executable, "-m", "dessert_mcp", *args, "--port", "{port}"]
    with started(argv, env=env, ready=healthz, log=stderr_path, port=port or free_port()) as server:
        yield server.url, server.pid


@asynccontextmanager
async def serving_here(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in the test's own event loop (so the test can await
    what the app's objects do); yields its base URL at once (requests wait in the backlog until it has started)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=2, access_log=False)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
    sock.close()
