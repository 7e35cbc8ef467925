"""The server's event hub: the SDK's `SubscriptionBus` (what `subscriptions/listen` streams read) with each event
belonging to one account.

A listen stream belongs to the account of the request that opened it (with --auth, the caller's; in single-key mode
there is one account and every stream is its). `publish_to(account, event)` reaches that account's streams only;
the SDK's own `publish` (`ctx.notify_*`) goes to the calling request's account. Across replicas (the `fanout` wing),
`relay` hands every event published here to the other replicas as well, and theirs arrive through `deliver`, which
reaches this process's streams only; `to_wire` and `from_wire` are how an event travels between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import anyio.lowlevel
from mcp.server.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

__all__ = [
    "AccountBus",
    "AccountEvents",
    "Relay",
    "ServerEvent",  # the SDK's, for the modules that carry events without importing the SDK
    "from_wire",
    "to_wire",
    "updated_uri",
]

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


class Relay(Protocol):
    """Carries an account's event to the other replicas; never blocks nor raises (it drops what it cannot carry)."""

    def send(self, account: str, event: ServerEvent) -> None: ...


class AccountBus:
    """A `SubscriptionBus` that routes by account. `whose` names the current request's account; without it (single-key
    mode) every stream hears every event."""

    def __init__(self, whose: Whose | None = None) -> None:
        self._whose = whose
        self._listeners: dict[object, tuple[str | None, Listener]] = {}
        self.relay: Relay | None = None

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
        """To `account`'s streams here at once, and through `relay` to the other replicas' (if any)."""
        await self.deliver(account, event)
        if self.relay is not None:
            self.relay.send(account, event)

    async def deliver(self, account: str, event: ServerEvent) -> None:
        """To `account`'s streams in this process only (where another replica's events arrive)."""
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


_LIST_CHANGED: Final[Mapping[str, ServerEvent]] = {
    "tools": ToolsListChanged(),
    "prompts": PromptsListChanged(),
    "resources": ResourcesListChanged(),
}


def updated_uri(event: ServerEvent) -> str | None:
    """The URI a `resources/updated` event names; None for the other kinds."""
    return event.uri if isinstance(event, ResourceUpdated) else None


def to_wire(event: ServerEvent) -> dict[str, str]:
    """The event as JSON-ready values (what another replica's `from_wire` reads)."""
    if isinstance(event, ResourceUpdated):
        return {"updated": event.uri}
    return {"list_changed": next(name for name, kind in _LIST_CHANGED.items() if kind == event)}


def from_wire(values: Mapping[str, object]) -> ServerEvent | None:
    """The event `to_wire` made; None for anything else (a newer replica's kind of event)."""
    uri = values.get("updated")
    if isinstance(uri, str):
        return ResourceUpdated(uri=uri)
    listed = values.get("list_changed")
    return _LIST_CHANGED.get(listed) if isinstance(listed, str) else None
