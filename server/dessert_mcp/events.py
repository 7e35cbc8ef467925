"""The server's event hub: the SDK's `SubscriptionBus` (what `subscriptions/listen` streams read) with each event
belonging to one account.

A listen stream belongs to the account of the request that opened it (with --auth, the caller's; in single-key mode
there is one account and every stream is its). `publish_to(account, event)` reaches that account's streams only;
the SDK's own `publish` (`ctx.notify_*`) goes to the calling request's account. Another process's events can be
fanned in by a bus over an external pub/sub backend that implements the same two calls (`AccountEvents`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import anyio.lowlevel
from mcp.server.subscriptions import ResourceUpdated, ServerEvent

logger = logging.getLogger("dessert_mcp")

# The resources whose changes are published: the context resources' URIs (dessert_mcp.context serves them).
BALANCE_URI: Final = "dessert://balance"
USAGE_URI: Final = "dessert://usage"
ALERTS_URI: Final = "dessert://alerts"

Listener = Callable[[ServerEvent], None]
# The account of the request running now (None: a request with no caller, which hears nothing).
Whose = Callable[[], str | None]


class AccountEvents(Protocol):
    """What publishers use: events for one account (implemented here in process; across replicas, over a backend)."""

    async def publish_to(self, account: str, event: ServerEvent) -> None: ...


class AccountBus:
    """A `SubscriptionBus` that routes by account. `whose` names the current request's account; without it (single-key
    mode) every stream hears every event."""

    def __init__(self, whose: Whose | None = None) -> None:
        self._whose = whose
        self._listeners: dict[object, tuple[str | None, Listener]] = {}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Called by the SDK's listen handler in the listening request's own context: the account is its caller's."""
        token = object()
        self._listeners[token] = (self._whose() if self._whose is not None else "", listener)

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    async def publish(self, event: ServerEvent) -> None:
        """The SDK's route (`ctx.notify_*`): to the calling request's account."""
        account = self._whose() if self._whose is not None else ""
        if account is not None:
            await self.publish_to(account, event)

    async def publish_to(self, account: str, event: ServerEvent) -> None:
        for owner, listener in list(self._listeners.values()):
            if self._whose is not None and owner != account:
                continue
            try:
                listener(event)
            except Exception:  # fan-out boundary: one bad listener must not starve the others
                logger.exception("A subscription listener raised; the others still hear the event")
        await anyio.lowlevel.checkpoint()  # let listen streams drain between events of a burst

    async def publish_uris(self, account: str, uris: Sequence[str]) -> None:
        """`resources/updated` for each of `uris`, to `account`'s streams (the alerts' `Publish`)."""
        for uri in uris:
            await self.publish_to(account, ResourceUpdated(uri=uri))
