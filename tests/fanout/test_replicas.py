"""Two replicas on one PostgreSQL and one Redis: what replica A sees reaches a client listening on replica B, each
event once; with Redis stopped the tools keep answering and A's own listeners still hear A, and once it is back the
events flow again, with nothing replayed and nothing twice."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated

from dessert_mcp.alerts import ALERTS_URI, BALANCE_URI, USAGE_URI
from dessert_mcp.config import Secret, Settings
from dessert_mcp.events import ServerEvent, updated_uri
from dessert_mcp.fanout import RedisFanout
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.sandbox import SandboxAccount
from dessert_mcp.sandbox.activity import LiveAccount
from dessert_mcp.service import DessertService
from tests.auth.conftest import SECOND_KEY, second_account
from tests.support import STARTUP_TIMEOUT_S
from tests.support.api import CANARY_KEY
from tests.support.faults import ThreadedAccountsSandbox, ThreadedFaultySandbox
from tests.support.postgres import Postgres
from tests.support.redis import RedisServer
from tests.support.servers import sandbox_settings, serving_here

WAIT_S = STARTUP_TIMEOUT_S  # a bound that holds on a busy machine; every wait is on the event itself
LISTENED = (BALANCE_URI, USAGE_URI, ALERTS_URI)


class Replica:
    """One replica of the server: its service, its fan-out, and an MCP client connected to it."""

    def __init__(self, service: DessertService, client: Client) -> None:
        self.service = service
        self.client = client
        relay = service.events.relay
        assert isinstance(relay, RedisFanout)
        self.fanout = relay

    async def balance(self) -> None:
        result = await self.client.call_tool("dessert.get_balance", {})
        assert result.is_error is False

    async def alert_ids(self) -> list[str]:
        listed = await self.client.read_resource(ALERTS_URI)
        text = listed.contents[0].text  # type: ignore[union-attr]
        return [a["id"] for a in json.loads(text)["alerts"]]


@asynccontextmanager
async def replica(sandbox: ThreadedFaultySandbox, redis_url: str) -> AsyncIterator[Replica]:
    """A single-key replica on the sandbox's key."""
    settings = sandbox_settings(sandbox, alert_balance_below=150)
    service = DessertService(settings)
    app = build_app(settings, HTTPOptions(redis_url=Secret(redis_url)), service=service)
    async with serving_here(app) as url, connected(url) as client:
        yield Replica(service, client)


@asynccontextmanager
async def connected(url: str, key: str | None = None) -> AsyncIterator[Client]:
    """An MCP client of the server at `url`, sending `key` as its bearer (--auth dessert-key)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(timeout=WAIT_S, headers=headers) as http,
        Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
    ):
        yield client


async def next_uri(events: AsyncIterator[object]) -> str:
    with anyio.fail_after(WAIT_S):
        event = await anext(events)
    assert isinstance(event, ResourceUpdated)
    return event.uri


def spend(sandbox: ThreadedFaultySandbox, credits: int) -> None:
    """A new deduction on the sandbox's account (the balance the next read shows)."""
    spend_from(sandbox.account, credits)


def spend_from(account: SandboxAccount, credits: int) -> None:
    ledger = account.ledger
    row = dict(ledger[-1])
    row |= {"type": "Deduction", "credits_delta": -credits, "balance_after": row["balance_after"] - credits}
    row |= {"usd_amount": None, "description": "API ad generation (count=1, format=full)"}
    ledger.append(row)


def deliveries(service: DessertService, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What the replica's bus delivers to its own listeners from now on (its own events and the others'), in order."""
    delivered: list[str | None] = []
    deliver = service.events.deliver

    async def logged(account: str, event: ServerEvent) -> None:
        delivered.append(updated_uri(event))
        await deliver(account, event)

    monkeypatch.setattr(service.events, "deliver", logged)
    return delivered


async def test_a_listener_on_one_replica_hears_what_another_saw_once_and_again_after_redis_comes_back(
    sandbox: ThreadedFaultySandbox,
    postgres: Postgres,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dessert_mcp.fanout")
    monkeypatch.setenv("DESSERT_MCP_DATABASE_URL", postgres.database())  # the one database both replicas share
    async with (
        replica(sandbox, redis_server.url) as a,
        replica(sandbox, redis_server.url) as b,
    ):
        with anyio.fail_after(WAIT_S):
            await a.fanout.connected()
            await b.fanout.connected()
        assert await b.alert_ids() == []  # B keeps the account's alerts (none yet) in memory
        on_a, on_b = deliveries(a.service, monkeypatch), deliveries(b.service, monkeypatch)
        async with (
            a.client.listen(resource_subscriptions=LISTENED) as listening_on_a,
            b.client.listen(resource_subscriptions=LISTENED) as listening_on_b,
        ):
            heard_on_a, heard_on_b = aiter(listening_on_a), aiter(listening_on_b)

            async def a_sees(*uris: str) -> None:
                """A reads the balance; both listeners hear `uris` (read as they come: a client merges an event
                into an identical one still unread)."""
                await a.balance()
                for uri in uris:
                    assert await next_uri(heard_on_a) == uri
                    assert await next_uri(heard_on_b) == uri

            await a_sees(BALANCE_URI)  # the balance A first sees (205 credits)
            spend(sandbox, 100)
            await a_sees(BALANCE_URI, ALERTS_URI)  # 105: below 150, an alert fires on A
            (alert,) = await a.alert_ids()
            assert await b.alert_ids() == [alert]  # B's kept alerts were dropped by A's event and read again

            await anyio.to_thread.run_sync(redis_server.stop)
            try:
                with anyio.fail_after(WAIT_S):
                    await a.fanout.disconnected()
                    await b.fanout.disconnected()
                spend(sandbox, 10)
                await a.balance()  # the tools answer, and A's own listeners still hear A
                assert await next_uri(heard_on_a) == BALANCE_URI
            finally:
                await anyio.to_thread.run_sync(redis_server.start)
            with anyio.fail_after(WAIT_S):
                await a.fanout.connected()
                await b.fanout.connected()

            spend(sandbox, 10)
            await a_sees(BALANCE_URI)
            await b.balance()  # B's own first balance: it reaches A after every echo of A's own events would
            assert await next_uri(heard_on_b) == BALANCE_URI
            assert await next_uri(heard_on_a) == BALANCE_URI

        # Each event once, A's own never back from Redis, nothing of the time Redis was down replayed.
        assert on_a == [BALANCE_URI, BALANCE_URI, ALERTS_URI, BALANCE_URI, BALANCE_URI, BALANCE_URI]
        assert on_b == [BALANCE_URI, BALANCE_URI, ALERTS_URI, BALANCE_URI, BALANCE_URI]

    said = [r.getMessage() for r in caplog.records if r.name == "dessert_mcp.fanout"]
    assert sum("unreachable" in line for line in said) == 2, said  # once per replica
    assert sum("reachable again" in line for line in said) == 2, said


async def test_with_auth_another_replicas_event_reaches_only_the_listeners_of_its_own_account(
    postgres: Postgres, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESSERT_MCP_DATABASE_URL", postgres.database())
    accounts = {CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account()}
    with ThreadedAccountsSandbox(accounts) as sandbox:
        settings = replace(Settings.from_env({}, log_level="WARNING", tool_names="dotted"), base_url=sandbox.url)
        options = HTTPOptions(auth="dessert-key", redis_url=Secret(redis_server.url))
        services = [DessertService(settings, per_account=True) for _ in range(2)]
        apps = [build_app(settings, options, service=service) for service in services]
        async with (
            serving_here(apps[0]) as a,
            serving_here(apps[1]) as b,
            connected(a, CANARY_KEY) as mine_on_a,
            connected(a, SECOND_KEY) as theirs_on_a,
            connected(b, CANARY_KEY) as mine_on_b,
            connected(b, SECOND_KEY) as theirs_on_b,
        ):
            with anyio.fail_after(WAIT_S):
                for service in services:
                    assert isinstance(service.events.relay, RedisFanout)
                    await service.events.relay.connected()
            set_alerts = await mine_on_a.call_tool("dessert.set_alerts", {"balance_below": 10**9})
            assert set_alerts.is_error is False
            async with (
                mine_on_b.listen(resource_subscriptions=LISTENED) as mine,
                theirs_on_b.listen(resource_subscriptions=LISTENED) as theirs,
            ):
                heard_by_mine, heard_by_theirs = aiter(mine), aiter(theirs)
                assert (await mine_on_a.call_tool("dessert.get_balance", {})).is_error is False
                assert [await next_uri(heard_by_mine) for _ in range(2)] == [BALANCE_URI, ALERTS_URI]
                for credits in (0, 10):  # their first balance, then a lower one: no alert (their thresholds)
                    if credits:
                        spend_from(sandbox.multi.accounts[SECOND_KEY], credits)
                    assert (await theirs_on_a.call_tool("dessert.get_balance", {})).is_error is False
                    # Had they heard my events, my alerts event would come before their second balance.
                    assert await next_uri(heard_by_theirs) == BALANCE_URI


@pytest.mark.poller
async def test_what_the_polling_replica_sees_reaches_a_listener_on_a_replica_that_does_not_poll(
    postgres: Postgres, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESSERT_MCP_DATABASE_URL", postgres.database())
    with ThreadedFaultySandbox(account=lambda: LiveAccount(rate=4.0, seed=7)) as sandbox:
        polling = sandbox_settings(sandbox, ledger_poll_min_s=0.5, ledger_poll_max_s=0.5)
        services = [DessertService(polling), DessertService(replace(polling, ledger_poll=False))]
        options = HTTPOptions(redis_url=Secret(redis_server.url))
        apps = [build_app(polling, options, service=service) for service in services]
        async with serving_here(apps[0]), serving_here(apps[1]) as b, connected(b) as on_b:
            with anyio.fail_after(WAIT_S):
                for service in services:
                    assert isinstance(service.events.relay, RedisFanout)
                    await service.events.relay.connected()
            async with on_b.listen(resource_subscriptions=LISTENED) as listening:
                assert await next_uri(aiter(listening)) in (BALANCE_URI, USAGE_URI)
            assert (services[0].poller is None, services[1].poller is None) == (False, True)  # what B heard, A saw
