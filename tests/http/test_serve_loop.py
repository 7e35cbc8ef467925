"""uvicorn's uvloop event loop and httptools parser: taken where they install, done without quietly where not."""

from __future__ import annotations

import gc
import importlib.util
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import uvicorn
from mcp import Client
from starlette.responses import PlainTextResponse

from dessert_mcp.http.serve import listening_socket, serve_app
from tests.support.servers import cli_server

CPYTHON = platform.python_implementation() == "CPython"


def test_served_apps_leave_the_loop_and_parser_to_uvicorn_which_finds_uvloop_and_httptools_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config))
    with listening_socket("127.0.0.1", 0, reuse_port=False) as sock:
        threshold = gc.get_threshold()
        try:
            serve_app(PlainTextResponse("hello"), sock, log_level="WARNING")
        finally:
            gc.unfreeze()  # serve_app froze this process's heap, as a serving process's
            gc.set_threshold(*threshold)
    (config,) = served
    # "auto": uvicorn takes uvloop and httptools when they import, and its own asyncio loop and h11 otherwise.
    assert (config.loop, config.http) == ("auto", "auto")
    if CPYTHON:
        assert importlib.util.find_spec("httptools") is not None
    if CPYTHON and sys.platform not in ("win32", "cygwin"):
        assert importlib.util.find_spec("uvloop") is not None


async def test_without_uvloop_and_httptools_the_server_serves_and_logs_nothing_alarming(
    server_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    # As on a platform without their wheels: importing either fails.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['uvloop'] = sys.modules['httptools'] = None\n")
    env = server_env(DESSERT_MCP_LOG_LEVEL="INFO", PYTHONPATH=str(tmp_path))
    stderr = tmp_path / "server.log"
    with cli_server(["--transport", "http"], env, stderr) as base:
        async with Client(base + "/mcp", mode="legacy") as client:
            result = await client.call_tool("dessert.get_balance", {})
            assert not result.is_error, result
    log = stderr.read_text()
    assert "Serving MCP over streamable HTTP" in log
    assert not re.search(r"WARNING|ERROR|CRITICAL|Traceback|uvloop|httptools", log), log
