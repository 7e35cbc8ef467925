"""Many accounts, one server: each caller sees only their own account, identical calls share an upstream request
only within one account, one account's calls are capped, and one connection pool serves them all."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import httpx2
import pytest

from dessert_mcp.auth import dessert_key_server_kwargs
from dessert_mcp.config import Secret, Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.sandbox import SandboxAccount
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server
from tests.auth.conftest import SECOND_BALANCE, SECOND_KEY, second_account
from tests.support.api import CANARY_KEY
from tests.support.auth import FlowClient, Running, call_tool, serve_auth
from tests.support.faults import AccountsSandbox, ThreadedAccountsSandbox
from tests.support.servers import serve_app

THIRD_KEY = "dsk_live_THIRD_0f1e2d3c4b5a69788796"
BALANCES = {CANARY_KEY: 205, SECOND_KEY: SECOND_BALANCE}
NEWEST = {CANARY_KEY: "API ad generation (count=3, format=full)", SECOND_KEY: "Credit purchase (second account)"}
A, B = Secret(CANARY_KEY).fingerprint(), Secret(SECOND_KEY).fingerprint()


@pytest.fixture(scope="module")
def accounts() -> Iterator[ThreadedAccountsSandbox]:
    """Its own sandbox: these tests hold requests at the door and count them."""
    sandbox = ThreadedAccountsSandbox(
        {CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account(), THIRD_KEY: SandboxAccount()}
    )
    with sandbox:
        yield sandbox


@pytest.fixture
def sandbox(accounts: ThreadedAccountsSandbox) -> Iterator[ThreadedAccountsSandbox]:
    accounts.reset()
    yield accounts
    accounts.release()
    accounts.reset()


@pytest.fixture(scope="module")
def dessert_key(accounts: ThreadedAccountsSandbox) -> Iterator[Running]:
    with serve_auth("dessert-key", dessert_url=accounts.url) as running:
        yield running


@pytest.fixture(scope="module")
def oauth(
    accounts: ThreadedAccountsSandbox, tmp_path_factory: pytest.TempPathFactory, encryption_key: str
) -> Iterator[Running]:
    database = tmp_path_factory.mktemp("tenancy") / "auth.db"
    with serve_auth(
        "oauth", dessert_url=accounts.url, database_url=f"sqlite:///{database}", encryption_key=encryption_key
    ) as running:
        yield running


async def bearers(mode: str, server: Running) -> dict[str, str]:
    """Each account's bearer in `mode`: its Dessert key, or an access token from signing in with it."""
    if mode == "dessert-key":
        return {key: key for key in BALANCES}
    async with httpx2.AsyncClient(timeout=30) as http:
        flow = FlowClient(http, server.url)
        client = await flow.register()
        return {key: (await flow.tokens_for(client, key))["access_token"] for key in BALANCES}


def check(key: str, tool: str, result: Any) -> None:
    """The result is this account's, and only this account's."""
    assert not result.is_error, result
    data = result.structured_content
    if tool == "dessert.get_balance":
        assert data["credits_balance"] == BALANCES[key]
    else:
        assert data["recent_transactions"][0]["description"] == NEWEST[key]
        assert data["recent_transactions"][0]["balance_after"] == BALANCES[key]


@pytest.mark.parametrize("mode", ["dessert-key", "oauth"])
async def test_two_accounts_calling_at_once_never_see_each_others_data_even_with_identical_calls_in_flight(
    mode: str, request: pytest.FixtureRequest, sandbox: ThreadedAccountsSandbox
) -> None:
    server: Running = request.getfixturevalue(mode.replace("-", "_"))
    tokens = await bearers(mode, server)
    sandbox.reset()  # the sign-ins checked the keys live
    sandbox.hold()
    calls = [(key, tool) for _ in range(3) for key in BALANCES for tool in ("dessert.get_balance", "dessert.get_usage")]
    results: dict[int, Any] = {}

    async def call(i: int, key: str, tool: str) -> None:
        results[i] = await call_tool(server.mcp_url, tokens[key], tool)

    async with anyio.create_task_group() as tg:
        for i, (key, tool) in enumerate(calls):
            tg.start_soon(call, i, key, tool)
        # Both accounts' balance and usage calls are upstream at the same moment, held there.
        await anyio.to_thread.run_sync(lambda: sandbox.wait_until(lambda s: s.in_flight[A] == 2 == s.in_flight[B]))
        sandbox.release()
    assert len(results) == len(calls)
    for i, (key, tool) in enumerate(calls):
        check(key, tool, results[i])


class _Seen(logging.Handler):
    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_one_account_has_at_most_its_limit_of_upstream_calls_while_another_is_served(
    accounts: ThreadedAccountsSandbox, sandbox: ThreadedAccountsSandbox
) -> None:
    seen = _Seen("at its limit of 1 Dessert calls at once")
    logger = logging.getLogger("dessert_mcp")
    logger.addHandler(seen)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with serve_auth("dessert-key", dessert_url=accounts.url, account_concurrency=1) as server:
            results: dict[str, Any] = {}

            async def call(name: str, key: str, tool: str) -> None:
                results[name] = await call_tool(server.mcp_url, key, tool)

            sandbox.hold()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a-balance", CANARY_KEY, "dessert.get_balance")
                tg.start_soon(call, "a-usage", CANARY_KEY, "dessert.get_usage")
                tg.start_soon(call, "b-balance", SECOND_KEY, "dessert.get_balance")
                await anyio.to_thread.run_sync(
                    lambda: sandbox.wait_until(lambda s: s.in_flight[A] == 1 == s.in_flight[B])
                )
                # A's second call is queued behind its first, not upstream, while B's call is served.
                assert await anyio.to_thread.run_sync(seen.event.wait, 20)
                assert sandbox.multi.in_flight[A] == 1
                sandbox.release()
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    check(CANARY_KEY, "dessert.get_balance", results["a-balance"])
    check(CANARY_KEY, "dessert.get_usage", results["a-usage"])
    check(SECOND_KEY, "dessert.get_balance", results["b-balance"])
    assert sandbox.multi.peak[A] == 1
    assert sandbox.stats()["requests"] == {"/v1/balance": 2, "/v1/usage": 1}


async def test_every_account_is_served_through_one_connection_pool_closed_at_shutdown() -> None:
    own = ThreadedAccountsSandbox(
        {CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account(), THIRD_KEY: SandboxAccount()}
    )
    with own:
        settings = replace(Settings.from_env({}, log_level="WARNING", tool_names="dotted"), base_url=own.url)
        service = DessertService(settings, per_account=True, max_accounts=2)
        app = build_app(settings, HTTPOptions(auth="dessert-key"), service=service)

        def connections(opened: int, open_now: int) -> None:
            own.wait_until(lambda s: (s.accepted, len(s.writers)) == (opened, open_now))

        with serve_app(app) as url:
            for key in (CANARY_KEY, SECOND_KEY, CANARY_KEY, CANARY_KEY):
                check(key, "dessert.get_balance", await call_tool(url + "/mcp", key))
            assert not (await call_tool(url + "/mcp", THIRD_KEY)).is_error
            check(CANARY_KEY, "dessert.get_usage", await call_tool(url + "/mcp", CANARY_KEY, "dessert.get_usage"))
            check(SECOND_KEY, "dessert.get_balance", await call_tool(url + "/mcp", SECOND_KEY))
            connections(opened=1, open_now=1)  # one origin, one pool: its connection serves every account
            assert len(service._accounts) == 2  # per-account state (a limiter) for the most recent callers only
        connections(opened=1, open_now=0)  # closed at shutdown


def test_the_accounts_sandbox_answers_each_key_with_its_own_account(accounts: ThreadedAccountsSandbox) -> None:
    for key, balance in ((CANARY_KEY, 205), (SECOND_KEY, SECOND_BALANCE), ("dsk_live_unknown_key_000000000", None)):
        response = httpx2.get(accounts.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == (200 if balance else 401)
        if balance:
            assert response.json()["credits_balance"] == balance
    assert isinstance(accounts.multi, AccountsSandbox)


async def test_one_test_transport_serves_every_account_with_each_callers_own_key() -> None:
    seen: list[str] = []

    def dessert(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers["authorization"].removeprefix("Bearer "))
        body = json.dumps(SandboxAccount().balance()).encode()
        return httpx2.Response(200, stream=httpx2.ByteStream(body), headers={"content-type": "application/json"})

    settings = Settings.from_env({}, log_level="WARNING", tool_names="dotted")
    app = build_app(settings, HTTPOptions(auth="dessert-key"), transport=httpx2.MockTransport(dessert))
    with serve_app(app) as url:
        for key in (CANARY_KEY, SECOND_KEY, THIRD_KEY, CANARY_KEY):
            assert not (await call_tool(url + "/mcp", key)).is_error
    assert seen == [CANARY_KEY, SECOND_KEY, THIRD_KEY, CANARY_KEY]


def test_a_server_with_auth_needs_a_per_account_service_and_one_without_refuses_it() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ValueError, match="per-account"):
        build_server(settings, service=DessertService(settings, per_account=True))
    with pytest.raises(ValueError, match="per-account"):
        build_server(settings, service=DessertService(settings), auth=dessert_key_server_kwargs())
    assert build_server(settings, auth=dessert_key_server_kwargs()) is not None
