"""`dessert-mcp --transport ...` as a real process: start-up refusals, and several workers behind one port."""

from __future__ import annotations

import contextlib
import gc
import pickle
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from dessert_mcp.config import ConfigError, Secret, Settings
from dessert_mcp.heap import YOUNG_OBJECTS
from dessert_mcp.http import HTTPOptions, serve
from dessert_mcp.http.serve import forwarded_headers, listening_socket
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import cli_server, worker_pids


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dessert_mcp", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0", id="non-loopback"),
        pytest.param(["--host", "0.0.0.0", "--allowed-host", "mcp.example.com"], "--allowed-origin", id="no-origins"),
        pytest.param(
            ["--workers", "2", "--stateful"],
            "--workers above 1 needs --transport http without --stateful",
            id="workers",
        ),
        pytest.param(["--stateful", "--stateless"], "contradict each other", id="stateful-and-stateless"),
        pytest.param(["--allowed-host", "*"], "--allowed-host must look like", id="wildcard-host"),
        pytest.param(["--allowed-origin", "https://x.example/path"], "--allowed-origin must look", id="origin-path"),
    ],
)
def test_unsafe_or_broken_command_lines_refuse_to_start_and_say_why(
    server_env: Callable[..., dict[str, str]], args: list[str], message: str
) -> None:
    result = run_cli("--transport", "http", *args, env=server_env())
    assert result.returncode != 0
    assert message in result.stderr


def test_an_auth_token_that_is_the_dessert_key_is_refused(
    server_env: Callable[..., dict[str, str]], sandbox: ThreadedFaultySandbox
) -> None:
    result = run_cli("--transport", "http", env=server_env(DESSERT_MCP_AUTH_TOKEN=sandbox.key))
    assert result.returncode != 0
    assert "must not be the Dessert API key" in result.stderr
    assert sandbox.key not in result.stderr


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_serving_http_without_a_key_warns_at_start_and_still_serves(
    server_env: Callable[..., dict[str, str]], tmp_path: Path, transport: str
) -> None:
    env = server_env(DESSERT_MCP_LOG_LEVEL="INFO")
    del env["DESSERT_API_KEY"]
    with cli_server(["--transport", transport], env, tmp_path / "stderr.log") as url:
        assert httpx2.get(f"{url}/healthz").status_code == 200
        assert httpx2.get(f"{url}/readyz").json() == {"status": "not ready", "reason": "not_configured"}
    assert re.search(r"WARNING dessert_mcp: DESSERT_API_KEY is not set", (tmp_path / "stderr.log").read_text())


def test_a_short_auth_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        HTTPOptions.from_env({"DESSERT_MCP_AUTH_TOKEN": "short"})


def test_an_unfilled_host_placeholder_for_the_auth_token_counts_as_unset_as_the_help_says() -> None:
    assert HTTPOptions.from_env({"DESSERT_MCP_AUTH_TOKEN": "${user_config.auth_token}"}).auth_token is None
    assert HTTPOptions.from_env({"DESSERT_MCP_AUTH_TOKEN": "  "}).auth_token is None


def test_a_non_loopback_bind_with_both_allow_lists_is_accepted() -> None:
    options = HTTPOptions(
        host="0.0.0.0", allowed_hosts=("mcp.example.com:443",), allowed_origins=("https://mcp.example.com",)
    )
    assert options.check(Settings(api_key=Secret("k" * 20))) is options


def test_settings_and_options_survive_the_trip_to_spawned_worker_processes() -> None:
    options = HTTPOptions(workers=2, allowed_hosts=("a.example",), auth_token=Secret("t" * 20))
    settings = Settings(api_key=Secret("k" * 20), timeout_s=3.5, max_attempts=7)
    assert pickle.loads(pickle.dumps((settings, options))) == (settings, options)


def test_connections_on_the_serving_socket_have_nagle_turned_off() -> None:
    """Declared as TCP, the socket makes asyncio set TCP_NODELAY on each accepted connection (uvicorn #3149)."""

    async def hello(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("hello")(scope, receive, send)

    sock = listening_socket("127.0.0.1", 0, reuse_port=True)
    sock.listen(8)
    config = uvicorn.Config(hello, log_config=None, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            (connection,) = server.server_state.connections
            served = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def served_without_running(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[list[uvicorn.Config]]:
    """`serve._serve` on a fresh socket with uvicorn's run replaced: yields the configs it would have served, with
    the heap as serving left it, then undoes the freeze and the collection threshold."""
    served: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config))
    sock = listening_socket("127.0.0.1", 0, reuse_port=False)
    threshold = gc.get_threshold()
    try:
        serve._serve(settings, HTTPOptions(port=0), sock)
        yield served
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sock.close()


def test_a_serving_process_freezes_its_start_up_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    with served_without_running(monkeypatch, Settings(log_level="WARNING")) as served:
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == YOUNG_OBJECTS  # young collections spaced out (dessert_mcp/heap.py)
        assert gc.isenabled()  # collection is off only while the app is built
    assert served
    assert served[0].log_config is None


@pytest.mark.parametrize("provider_set", [False, True], ids=["nothing-traces", "a-provider-is-set"])
@pytest.mark.parametrize(("log_level", "access_log"), [("WARNING", False), ("INFO", True), ("DEBUG", True)])
def test_a_serving_process_keeps_the_sdk_spans_only_if_heard_and_the_access_log_only_if_shown(
    monkeypatch: pytest.MonkeyPatch, provider_set: bool, log_level: str, access_log: bool
) -> None:
    from mcp.server._otel import OpenTelemetryMiddleware
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import dessert_mcp.http.app

    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    provider = TracerProvider() if provider_set else trace.ProxyTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)  # a process has one provider for life
    built: list[Any] = []

    def build_server(*args: Any, **kwargs: Any) -> Any:
        built.append(real_build_server(*args, **kwargs))
        return built[-1]

    real_build_server = dessert_mcp.http.app.build_server
    monkeypatch.setattr(dessert_mcp.http.app, "build_server", build_server)
    with served_without_running(monkeypatch, Settings(log_level=log_level)) as served:
        pass
    (server,) = built
    assert any(isinstance(m, OpenTelemetryMiddleware) for m in server.middleware) is provider_set
    assert served[0].access_log is access_log


async def test_stateless_calls_from_one_client_spread_over_two_workers_and_all_succeed(
    server_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = server_env(DESSERT_MCP_LOG_LEVEL="DEBUG")
    stderr = tmp_path / "server.log"
    with cli_server(["--transport", "http", "--stateless", "--workers", "2"], env, stderr) as base:
        # No keep-alive: each request opens a connection, which the kernel hands to one of the workers' sockets.
        limits = httpx2.Limits(max_keepalive_connections=0)
        async with (
            httpx2.AsyncClient(limits=limits, timeout=30) as http,
            Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy") as client,
        ):
            calls = 0
            pids: set[str] = set()

            async def call(name: str) -> None:
                nonlocal calls
                result = await client.call_tool(name, {})
                assert not result.is_error, result
                calls += 1

            for _ in range(10):  # bounded: the first round or two spread in practice
                async with anyio.create_task_group() as tg:
                    for n in range(8):
                        tg.start_soon(call, "dessert.get_balance" if n % 2 else "dessert.get_usage")
                pids = worker_pids(stderr)
                if len(pids) == 2:
                    break
    assert len(pids) == 2, f"all {calls} calls landed on one worker"


def test_the_transport_module_leaves_uvicorn_and_starlette_unimported_until_serving() -> None:
    code = "import sys, dessert_mcp.cli, dessert_mcp.http\nprint(sorted({'uvicorn', 'starlette'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_no_forwarded_header_is_believed_unless_a_proxy_is_named() -> None:
    # uvicorn's own default believes X-Forwarded-For from 127.0.0.1: anything co-located could pose as any client.
    assert forwarded_headers(())["proxy_headers"] is False
    assert forwarded_headers(("10.0.0.5",)) == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5"]}


def test_trusted_proxies_come_from_the_flag_or_the_variable_and_must_be_addresses() -> None:
    assert HTTPOptions.from_env({}).trusted_proxies == ()
    both = {"DESSERT_MCP_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"}
    assert HTTPOptions.from_env(both).trusted_proxies == ("10.0.0.5", "10.1.0.0/16")
    assert HTTPOptions.from_env(both, trusted_proxies=("192.0.2.1",)).trusted_proxies == ("192.0.2.1",)
    with pytest.raises(ConfigError, match="--trusted-proxy"):
        HTTPOptions(trusted_proxies=("proxy.internal",)).check()
