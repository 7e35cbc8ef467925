"""Alerts on each account (the ledger's wing): rules judged on every change the server sees, kept with the ledger.

    watcher = Watcher(InMemoryAlertStore(), Thresholds(balance_below=100), publish=hub.publish_uris)
    ledger = watcher.ledger(ledger)        # what the recorder and the poller write to
    await watcher.active(account)          # the account's active alerts

`rules` says when an alert fires and clears, `store` and `database` keep them, `watch` ties them to the ledger.
"""

from __future__ import annotations

from dessert_mcp.alerts.rules import RULES, Alert, Rule, Thresholds
from dessert_mcp.alerts.store import AlertStore, InMemoryAlertStore, OpenedAlertStore
from dessert_mcp.alerts.watch import Publish, Watcher
from dessert_mcp.events import ALERTS_URI, BALANCE_URI, USAGE_URI

__all__ = [
    "ALERTS_URI",
    "BALANCE_URI",
    "RULES",
    "USAGE_URI",
    "Alert",
    "AlertStore",
    "InMemoryAlertStore",
    "OpenedAlertStore",
    "Publish",
    "Rule",
    "Thresholds",
    "Watcher",
]
