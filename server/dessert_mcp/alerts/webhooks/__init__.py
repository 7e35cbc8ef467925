"""Alert webhooks (DESSERT_ALERT_WEBHOOK_URL): each alert fired or cleared, POSTed as signed JSON to each URL, at
least once, by one replica, from an outbox in the ledger's database.

    deliverer = Deliverer(database, urls, secret=...)
    store.deliver_to(deliverer.outbox.queue, deliverer.wake)   # the alert store queues with each event
    async with deliverer.running(): ...                         # in the service's lifespan

`message` is what is sent and how it is signed, `outbox` the rows from queued to done, `delivery` the sending.
Imported only when a webhook URL is set.
"""

from __future__ import annotations

from dessert_mcp.alerts.webhooks.delivery import Deliverer, Schedule, Target, targets
from dessert_mcp.alerts.webhooks.message import signature
from dessert_mcp.alerts.webhooks.outbox import Finished, Outbox

__all__ = ["Deliverer", "Finished", "Outbox", "Schedule", "Target", "signature", "targets"]
