"""Alerts through the server, kept in the ledger's database: get_balance carries the active ones, dessert://alerts
lists them, and a listen stream hears dessert://alerts change."""

from __future__ import annotations

import json

import anyio
from mcp import Client
from mcp.client.subscriptions import ResourceUpdated

from dessert_mcp.alerts import ALERTS_URI
from dessert_mcp.alerts.database import DatabaseAlertStore
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_settings


async def test_a_low_balance_alert_is_kept_in_the_database_listed_carried_by_get_balance_and_published(
    sandbox: ThreadedFaultySandbox,
) -> None:
    settings = sandbox_settings(sandbox, alert_balance_below=10**9)  # every balance is below it
    service = DessertService(settings)
    assert service.watcher is not None
    assert isinstance(service.watcher.store, DatabaseAlertStore)  # the default: the ledger's database
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
        assert alert["rule"] == "balance_below"
        assert alert["active"] is True
        assert alert["threshold"] == 10**9
        assert alert["cleared_at"] is None
