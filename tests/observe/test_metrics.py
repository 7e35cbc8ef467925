"""/metrics on the HTTP transports: scraped for real, behind the server's token, with no per-account labels."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from dessert_mcp.config import Secret
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from tests.support.api import DOCS_BALANCE, assert_no_secret, streamed
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import cli_server, sandbox_env, sandbox_settings, serve_app, worker_pids

TOKEN = "tok_" + "7" * 28
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
LABELS = {"tool", "code", "route", "status", "reason", "le"}


def scrape(base: str, token: str | None = None) -> tuple[str, Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return parse(httpx2.get(base + "/metrics", headers=headers, timeout=10))


def parse(response: httpx2.Response) -> tuple[str, Samples]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_tool_calls_upstream_requests_and_retries_are_counted(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox
) -> None:
    base = serve()
    _, before = scrape(base)
    async with Client(base + "/mcp") as client:
        assert not (await client.call_tool("dessert.get_balance", {})).is_error
        assert not (await client.call_tool("dessert_get_balance", {})).is_error  # either spelling is one tool
        assert (await client.call_tool("dessert.get_usage", {"limit": 0})).is_error
        sandbox.add_fault(path="/v1/balance", status=503, times=1)
        assert not (await client.call_tool("dessert.get_balance", {})).is_error
        sandbox.add_fault(path="/v1/balance", status=401, times=1)
        assert (await client.call_tool("dessert.get_balance", {})).is_error
    page, after = scrape(base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "dessert_mcp_tool_calls_total"
    assert delta(calls, tool="dessert.get_balance", code="ok") == 3
    assert delta(calls, tool="dessert.get_balance", code="auth_invalid") == 1
    assert delta(calls, tool="dessert.get_usage", code="invalid_argument") == 1
    assert delta("dessert_mcp_tool_call_duration_seconds_count", tool="dessert.get_balance") == 4
    upstream = "dessert_mcp_upstream_requests_total"
    assert delta(upstream, route="/v1/balance", status="200") == 3
    assert delta(upstream, route="/v1/balance", status="503") == 1
    assert delta(upstream, route="/v1/balance", status="401") == 1
    assert delta(upstream, route="/v1/usage", status="200") == 0  # the invalid call never asked
    assert delta("dessert_mcp_upstream_retries_total", route="/v1/balance", reason="upstream_unavailable") == 1
    assert value(after, "dessert_mcp_tool_calls_in_flight") == 0
    assert value(after, "process_resident_memory_bytes") > 0
    ours = {labels for (name, labels) in after if name.startswith("dessert_mcp_")}
    assert {key for labels in ours for key, _ in labels} <= LABELS, "a label that could name an account"
    assert_no_secret(page, sandbox.key)


async def test_metrics_need_the_servers_token_when_it_has_one(serve: Callable[..., str]) -> None:
    base = serve(auth_token=Secret(TOKEN))
    refused = httpx2.get(base + "/metrics", timeout=10)
    assert refused.status_code == 401
    wrong = httpx2.get(base + "/metrics", headers={"Authorization": "Bearer " + "x" * 32}, timeout=10)
    assert wrong.status_code == 401
    page, _ = scrape(base, TOKEN)
    assert "dessert_mcp_tool_calls_in_flight" in page
    assert httpx2.get(base + "/healthz", timeout=10).status_code == 200  # the probes stay open


class GatedBalance(httpx2.AsyncBaseTransport):
    """A Dessert API whose answers wait until the test opens the gate, counting the requests it gets."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.requests = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        await anyio.to_thread.run_sync(self.gate.wait)
        return streamed(httpx2.Response(200, json=DOCS_BALANCE))


@pytest.fixture
def gated(sandbox: ThreadedFaultySandbox) -> Iterator[tuple[str, GatedBalance]]:
    upstream = GatedBalance()
    app = build_app(sandbox_settings(sandbox, cache_ttl_s=60.0), HTTPOptions().check(), transport=upstream)
    try:
        with serve_app(app) as base:
            yield base, upstream
    finally:
        upstream.gate.set()


async def test_shared_requests_cache_hits_and_calls_in_flight_are_counted(gated: tuple[str, GatedBalance]) -> None:
    base, upstream = gated

    async def call() -> None:
        async with Client(base + "/mcp") as client:
            assert not (await client.call_tool("dessert.get_balance", {})).is_error

    with anyio.fail_after(20):
        async with httpx2.AsyncClient(timeout=10) as http, anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
            # The server runs in another thread: its in-flight gauge is the one sign that all three calls wait
            # (a call joins the flight without yielding once it is counted), so watch it, a bounded number of times.
            for _ in range(500):
                if value(parse(await http.get(base + "/metrics"))[1], "dessert_mcp_tool_calls_in_flight") == 3:
                    break
                await anyio.sleep(0.02)
            else:
                pytest.fail("the three calls were never in flight together")
            upstream.gate.set()
        await call()
    _, samples = scrape(base)
    assert upstream.requests == 1
    assert value(samples, "dessert_mcp_singleflight_shared_total", route="/v1/balance") == 2
    assert value(samples, "dessert_mcp_cache_hits_total", route="/v1/balance") == 1
    assert value(samples, "dessert_mcp_tool_calls_total", tool="dessert.get_balance", code="ok") == 4
    assert value(samples, "dessert_mcp_tool_calls_in_flight") == 0


async def test_with_two_workers_any_workers_metrics_count_every_workers_calls(
    sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    env = sandbox_env(sandbox, DESSERT_MCP_LOG_LEVEL="DEBUG")
    stderr = tmp_path / "server.log"
    calls = 0
    pids: set[str] = set()
    with cli_server(["--transport", "http", "--workers", "2"], env, stderr) as base:
        limits = httpx2.Limits(max_keepalive_connections=0)  # a connection per request, spread by the kernel
        async with (
            httpx2.AsyncClient(limits=limits, timeout=30) as http,
            Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy") as client,
        ):
            # The first worker may serve alone until the second is up: rounds of calls (bounded) until both have.
            for _ in range(20):
                for _ in range(6):
                    assert not (await client.call_tool("dessert.get_balance", {})).is_error
                    calls += 1
                pids = worker_pids(stderr)
                if len(pids) == 2:
                    break
        totals = {value(scrape(base)[1], "dessert_mcp_tool_calls_total", tool="dessert.get_balance", code="ok")}
        for _ in range(5):
            totals.add(value(scrape(base)[1], "dessert_mcp_tool_calls_total", tool="dessert.get_balance", code="ok"))
    assert len(pids) == 2, "the calls all landed on one worker; the test proves nothing then"
    assert totals == {calls}
    assert sandbox.stats()["requests"].get("/v1/balance") == calls
