"""Alerts through the server, kept in the ledger's database: get_balance carries the active ones, dessert://alerts
lists them, and a listen stream hears dessert://alerts change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated

from dessert_mcp.alerts import ALERTS_URI, Alert, AlertStore, OpenedAlertStore
from dessert_mcp.alerts.database import DatabaseAlertStore
from dessert_mcp.ledger import InMemoryLedger, Ledger
from dessert_mcp.recorder import Stores, open_stores
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server
from tests.auth.conftest import SECOND_KEY, two_accounts_served
from tests.support.alerts import CountingStore
from tests.support.api import CANARY_KEY
from tests.support.auth import call_tool
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_settings


async def test_a_low_balance_alert_is_kept_in_the_database_listed_carried_by_get_balance_and_published(
    sandbox: ThreadedFaultySandbox,
) -> None:
    settings = sandbox_settings(sandbox, alert_balance_below=10**9)  # every balance is below it
    service = DessertService(settings)
    assert service.watcher is not None
    store = service.watcher.store
    assert isinstance(store, OpenedAlertStore)  # the default: the ledger's database, opened on first use
    async with Client(build_server(settings, service=service)) as client:
        async with client.listen(resource_subscriptions=[ALERTS_URI]) as subscription:
            first = await client.call_tool("dessert.get_balance", {})
            assert first.is_error is False
            with anyio.fail_after(60):
                event = await anext(aiter(subscription))
            assert isinstance(event, ResourceUpdated)
            assert event.uri == ALERTS_URI
        second = await client.call_tool("dessert.get_balance", {})
        assert second.structured_content is not None
        (summary,) = second.structured_content["alerts"]
        assert summary.startswith("balance_below: ")
        listed = await client.read_resource(ALERTS_URI)
        text = listed.contents[0].text  # type: ignore[union-attr]
        (alert,) = json.loads(text)["alerts"]
        assert set(alert) == {"id", "rule", "account", "value", "threshold", "fired_at", "cleared_at", "active"}
        assert alert["rule"] == "balance_below"
        assert alert["active"] is True
        assert alert["threshold"] == 10**9
        assert alert["cleared_at"] is None
    assert isinstance(await store.opened(), DatabaseAlertStore)


async def test_with_auth_each_account_sets_only_its_own_thresholds_and_only_its_own_alerts_fire() -> None:
    with two_accounts_served() as (_service, mcp_url):
        mine = await call_tool(mcp_url, CANARY_KEY, "dessert.set_alerts", balance_below=10**9)
        assert mine.structured_content == {"balance_below": 10**9, "runway_days": 3.0, "spike_factor": 3.0}
        theirs = await call_tool(mcp_url, SECOND_KEY, "dessert.set_alerts")  # nothing given: reads them back
        assert theirs.structured_content == {"balance_below": 0, "runway_days": 3.0, "spike_factor": 3.0}
        refused = await call_tool(mcp_url, CANARY_KEY, "dessert.set_alerts", balance_below=-1)
        assert refused.is_error is True

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {CANARY_KEY}"}, timeout=60) as http,
            Client(streamable_http_client(mcp_url, http_client=http)) as client,
            client.listen(resource_subscriptions=[ALERTS_URI]) as subscription,
        ):
            assert (await client.call_tool("dessert.get_balance", {})).is_error is False
            with anyio.fail_after(60):
                event = await anext(aiter(subscription))
            assert isinstance(event, ResourceUpdated)
            balance = await client.call_tool("dessert.get_balance", {})
            assert balance.structured_content is not None
            assert [a.split(":")[0] for a in balance.structured_content["alerts"]] == ["balance_below"]
        other = await call_tool(mcp_url, SECOND_KEY, "dessert.get_balance")
        assert other.structured_content is not None
        assert other.structured_content["alerts"] == []
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {SECOND_KEY}"}, timeout=60) as http,
            Client(streamable_http_client(mcp_url, http_client=http)) as client,
        ):
            listed = await client.read_resource(ALERTS_URI)
            assert json.loads(listed.contents[0].text)["alerts"] == []  # type: ignore[union-attr]


async def test_the_alert_store_opens_with_the_ledger_from_one_database_on_first_use_not_when_the_server_is_made(
    sandbox: ThreadedFaultySandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_file = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("DESSERT_MCP_DATABASE_URL", f"sqlite:///{database_file}")
    opened: list[tuple[Ledger, AlertStore]] = []

    def open_both() -> tuple[Ledger, AlertStore]:
        opened.append(open_stores())
        return opened[-1]

    monkeypatch.setattr("dessert_mcp.service.Stores", lambda: Stores(open_both))
    settings = sandbox_settings(sandbox, alert_balance_below=10**9)
    service = DessertService(settings)
    build_server(settings, service=service)
    assert service.watcher is not None
    assert service.recorder is not None
    assert opened == []  # made and listed, never called: no database opened
    store = service.watcher.store
    assert isinstance(store, OpenedAlertStore)
    assert (await store.recent("someone")) == []  # the alerts first: the ledger comes with them
    ledger = await service.recorder.opened()
    await ledger.aclose()  # the database both share
    assert len(opened) == 1
    assert database_file.exists()


async def test_get_balance_with_an_active_alert_reads_the_alert_store_only_when_something_changed(
    sandbox: ThreadedFaultySandbox,
) -> None:
    store = CountingStore()
    settings = sandbox_settings(sandbox, alert_balance_below=10**9, ledger_poll=False)
    service = DessertService(settings, ledger=InMemoryLedger(), alerts=store)
    async with Client(build_server(settings, service=service)) as client:
        async with client.listen(resource_subscriptions=[ALERTS_URI]) as subscription:
            assert (await client.call_tool("dessert.get_balance", {})).is_error is False
            with anyio.fail_after(60):
                await anext(aiter(subscription))  # the first balance fired the alert
        assert service.recorder is not None
        await service.recorder.settled()
        reads = store.reads
        for _ in range(20):  # the same balance every time: nothing to judge, nothing to read
            result = await client.call_tool("dessert.get_balance", {})
            assert result.structured_content is not None
            assert [a.split(":")[0] for a in result.structured_content["alerts"]] == ["balance_below"]
        await service.recorder.settled()
        assert store.reads == reads


async def test_the_alerts_resource_judges_which_alerts_are_active_by_the_services_clock_as_get_balance_does(
    sandbox: ThreadedFaultySandbox,
) -> None:
    # An auto-recharge is active until the end of its day: by the service's clock (a replayed past) that day is
    # long over, though by the machine's it is not.
    now = datetime.now(UTC)
    recharged = Alert("r1", "auto_recharge", "key:x", 250, 0, now - timedelta(hours=1), now + timedelta(hours=1))
    level = Alert("b1", "balance_below", "key:x", 80, 100, now - timedelta(days=3))

    class Replaying(DessertService):
        async def alerts(self) -> list[Alert]:
            return [recharged, level]

    settings = sandbox_settings(sandbox)
    service = Replaying(settings, clock=lambda: now + timedelta(days=2))
    async with Client(build_server(settings, service=service)) as client:
        balance = await client.call_tool("dessert.get_balance", {})
        listed = await client.read_resource(ALERTS_URI)
    assert balance.structured_content is not None
    assert [a.split(":")[0] for a in balance.structured_content["alerts"]] == ["balance_below"]
    text = listed.contents[0].text  # type: ignore[union-attr]
    assert {a["id"]: a["active"] for a in json.loads(text)["alerts"]} == {"r1": False, "b1": True}
