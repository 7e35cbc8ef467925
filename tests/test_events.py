"""Live resources: what the poller sees on a live account reaches 2026-07-28 clients through subscriptions/listen,
over stdio and streamable HTTP (stateless), and each account's events reach only that account's streams."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.server.subscriptions import ServerEvent
from mcp.types import METHOD_NOT_FOUND, EmptyResult, SubscribeRequest, SubscribeRequestParams

from dessert_mcp.alerts import ALERTS_URI, BALANCE_URI, USAGE_URI
from dessert_mcp.auth.caller import key_subject
from dessert_mcp.events import AccountBus
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.ledger import remote_account
from dessert_mcp.sandbox.activity import LiveAccount
from tests.auth.conftest import SECOND_KEY, two_accounts_served
from tests.support import STARTUP_TIMEOUT_S
from tests.support.api import CANARY_KEY
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_env, sandbox_settings, serve_app

LIVE = (BALANCE_URI, USAGE_URI)
EACH = 1000  # events published to each account at once
WAIT_S = STARTUP_TIMEOUT_S  # a bound that holds on a busy machine; every wait is on the event itself


@pytest.fixture
def live_sandbox() -> Iterator[ThreadedFaultySandbox]:
    with ThreadedFaultySandbox(account=lambda: LiveAccount(rate=4.0, seed=7)) as sandbox:
        yield sandbox


async def _first_update(client: Client) -> str:
    """The URI of the first resources/updated the client's listen stream brings."""
    async with client.listen(resource_subscriptions=LIVE) as subscription:
        with anyio.fail_after(WAIT_S):
            async for event in subscription:
                assert isinstance(event, ResourceUpdated)
                return event.uri
    raise AssertionError("the listen stream ended without an event")


async def test_a_stdio_client_hears_the_live_accounts_changes_the_poller_sees(
    live_sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    env = sandbox_env(
        live_sandbox,
        DESSERT_LEDGER_POLL_MIN_S="0.5",
        DESSERT_LEDGER_POLL_MAX_S="0.5",
        XDG_DATA_HOME=str(tmp_path),
    )
    async with Client(StdioServerParameters(command=sys.executable, args=["-m", "dessert_mcp"], env=env)) as client:
        assert await _first_update(client) in LIVE


@pytest.mark.poller
async def test_a_stateless_http_client_hears_the_live_accounts_changes_the_poller_sees(
    live_sandbox: ThreadedFaultySandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ledger of its own: a server stopped cleanly gives up its poll lease, but one an earlier test killed (or still
    # runs) in the worker's shared ledger may hold the account's lease, and this server would then not poll.
    monkeypatch.setenv("DESSERT_MCP_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    settings = sandbox_settings(live_sandbox, ledger_poll_min_s=0.5, ledger_poll_max_s=0.5)
    app = build_app(settings, HTTPOptions())
    with serve_app(app) as url:
        async with Client(streamable_http_client(url + "/mcp")) as client:
            assert await _first_update(client) in LIVE


class Heard:
    """Every event one listener heard."""

    def __init__(self) -> None:
        self.uris: list[str] = []

    def __call__(self, event: ServerEvent) -> None:
        assert isinstance(event, ResourceUpdated)
        self.uris.append(event.uri)


async def test_two_accounts_each_hear_only_their_own_events_under_concurrent_publishing() -> None:
    current: list[str | None] = [None]
    bus = AccountBus(lambda: current[0])
    heard: dict[str, Heard] = {}
    for account in ("acct:a", "acct:b"):
        current[0] = account
        heard[account] = Heard()
        bus.subscribe(heard[account])
    current[0] = None
    nobody = Heard()
    bus.subscribe(nobody)  # a stream opened without a caller hears nothing

    async def publish(account: str, uri: str) -> None:
        for _ in range(EACH):
            await bus.publish_to(account, ResourceUpdated(uri=uri))

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish, "acct:a", BALANCE_URI)
        tg.start_soon(publish, "acct:b", USAGE_URI)
    assert heard["acct:a"].uris == [BALANCE_URI] * EACH
    assert heard["acct:b"].uris == [USAGE_URI] * EACH
    assert nobody.uris == []


async def test_in_single_key_mode_every_stream_hears_the_one_accounts_events() -> None:
    bus = AccountBus()
    first, second = Heard(), Heard()
    bus.subscribe(first)
    unsubscribe = bus.subscribe(second)
    await bus.publish_uris("any", [BALANCE_URI])
    unsubscribe()
    await bus.publish_uris("any", [USAGE_URI])
    assert first.uris == [BALANCE_URI, USAGE_URI]
    assert second.uris == [BALANCE_URI]


async def test_with_auth_each_accounts_listen_stream_gets_none_of_the_other_accounts_events() -> None:
    with two_accounts_served() as (service, mcp_url):
        subjects = {key: remote_account(key_subject(key)) for key in (CANARY_KEY, SECOND_KEY)}
        ours = {CANARY_KEY: BALANCE_URI, SECOND_KEY: USAGE_URI}
        heard: dict[str, list[str]] = {}

        async def listen(key: str, ready: anyio.Event) -> None:
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S) as http,
                Client(streamable_http_client(mcp_url, http_client=http)) as client,
                client.listen(resource_subscriptions=[*LIVE, ALERTS_URI]) as subscription,
            ):
                ready.set()
                uris = heard.setdefault(key, [])
                async for event in subscription:
                    assert isinstance(event, ResourceUpdated)
                    uris.append(event.uri)
                    if event.uri == ALERTS_URI:  # the last event published to this account
                        return

        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tg:
                for key in ours:
                    ready = anyio.Event()
                    tg.start_soon(listen, key, ready)
                    await ready.wait()

                async def publish(key: str) -> None:
                    for _ in range(EACH):
                        await service.events.publish_to(subjects[key], ResourceUpdated(uri=ours[key]))
                    await service.events.publish_to(subjects[key], ResourceUpdated(uri=ALERTS_URI))

                for key in ours:
                    tg.start_soon(publish, key)
    for key, uri in ours.items():
        # Every one of its own 1,000 events, in order, and not one of the other account's.
        assert heard[key] == [uri] * EACH + [ALERTS_URI]


@pytest.mark.parametrize("transport", ["stdio", "sse", "stateful-http", "stateless-http"])
async def test_handshake_era_clients_are_told_resources_subscribe_is_not_served_and_it_is_refused(
    sandbox: ThreadedFaultySandbox, tmp_path: Path, transport: str
) -> None:
    # The SDK documents no route for the handshake era's resources/subscribe: the capability says so, on every
    # transport such a client may use, and the request is refused rather than accepted and never honoured.
    async with _handshake_client(sandbox, tmp_path, transport) as client:
        assert client.protocol_version < "2026-07-28"  # a handshake-era revision
        assert client.server_capabilities.resources is not None
        assert not client.server_capabilities.resources.subscribe
        assert not client.server_capabilities.resources.list_changed
        with pytest.raises(MCPError) as refused:
            await client.session.send_request(
                SubscribeRequest(params=SubscribeRequestParams(uri=BALANCE_URI)), EmptyResult
            )
        assert refused.value.error.code == METHOD_NOT_FOUND


@asynccontextmanager
async def _handshake_client(sandbox: ThreadedFaultySandbox, tmp_path: Path, transport: str) -> AsyncIterator[Client]:
    if transport == "stdio":
        env = sandbox_env(sandbox, DESSERT_LEDGER_POLL="off", XDG_DATA_HOME=str(tmp_path), HOME=str(tmp_path))
        server = StdioServerParameters(command=sys.executable, args=["-m", "dessert_mcp"], env=env)
        async with Client(server, mode="legacy") as client:
            yield client
        return
    options = HTTPOptions(transport="sse") if transport == "sse" else HTTPOptions(stateful=transport == "stateful-http")
    with serve_app(build_app(sandbox_settings(sandbox, ledger_poll=False), options)) as url:
        target = sse_client(url + "/sse") if transport == "sse" else streamable_http_client(url + "/mcp")
        async with Client(target, mode="legacy") as client:
            yield client


async def test_modern_clients_are_told_resources_are_subscribable_through_subscriptions_listen(
    sandbox: ThreadedFaultySandbox,
) -> None:
    with serve_app(build_app(sandbox_settings(sandbox), HTTPOptions())) as url:
        async with Client(streamable_http_client(url + "/mcp")) as client:  # discovers the 2026-07-28 revision
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True  # served through subscriptions/listen
