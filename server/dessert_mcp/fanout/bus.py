"""`RedisFanout`: the relay of `events.AccountBus` over one Redis pub/sub channel, with redis-py's asyncio client."""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dessert_mcp.config import Secret
from dessert_mcp.events import ServerEvent, from_wire, to_wire

logger = logging.getLogger("dessert_mcp.fanout")

# One channel for every replica of a deployment: each message names its account (and its sender, `origin`).
CHANNEL: Final = "dessert-mcp:events"
# Events waiting to be sent; beyond this (Redis slower than the events come) one is dropped rather than wait.
QUEUE_SIZE: Final = 1024
# Reconnecting: the first wait, doubled per failure up to the last, with jitter (replicas do not return in step).
BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
# How long a connection may wait on Redis before it counts as down (connecting, or a silent subscription's ping).
TIMEOUT_S: Final = 10.0

# Another replica's event for one account (the service's `remote_event`).
Sink = Callable[[str, ServerEvent], Awaitable[None]]


class RedisFanout:
    """Sends this replica's events to Redis and hands the other replicas' to `sink`, reconnecting for as long as
    `running()` runs; an `events.Relay`."""

    def __init__(
        self,
        url: Secret,
        sink: Sink,
        *,
        channel: str = CHANNEL,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.origin = uuid.uuid4().hex  # this replica, in every message it sends
        self.channel = channel
        self._url = url
        self._sink = sink
        self._backoff = (backoff_min_s, backoff_max_s)
        self._outbox: MemoryObjectSendStream[str] | None = None
        self._up = anyio.Event()  # set while subscribed; replaced when the connection drops
        self._down = anyio.Event()  # the other way round
        self._down.set()
        self._down_since_warned = False
        self._ever_up = False
        self._failures = 0  # connections failed since the last that worked

    def __repr__(self) -> str:
        return f"RedisFanout({self.where!r})"

    @property
    def where(self) -> str:
        """Redis's address for messages, without the URL's credentials."""
        parts = urlsplit(self._url.get())
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"

    @property
    def up(self) -> bool:
        return self._up.is_set()

    async def connected(self) -> None:
        """Wait until subscribed (at once when it is)."""
        await self._up.wait()

    async def disconnected(self) -> None:
        """Wait until the connection is lost (at once when it is)."""
        await self._down.wait()

    def send(self, account: str, event: ServerEvent) -> None:
        """Queue `event` for the other replicas; dropped while Redis is down (nothing is replayed when it is back)."""
        if self._outbox is None or not self.up:
            return
        message = json.dumps({"origin": self.origin, "account": account, **to_wire(event)})
        try:
            self._outbox.send_nowait(message)
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            logger.debug("An event for the other replicas was dropped: Redis is behind")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RedisFanout]:
        """Connected (and reconnecting) while the block runs. Never fails the block: Redis down is logged."""
        send, receive = anyio.create_memory_object_stream[str](QUEUE_SIZE)
        async with send, receive, anyio.create_task_group() as tg:
            tg.start_soon(self._connect_forever, receive, name="dessert-mcp fan-out")
            self._outbox = send
            try:
                yield self
            finally:
                self._outbox = None
                tg.cancel_scope.cancel()

    async def _connect_forever(self, outbox: MemoryObjectReceiveStream[str]) -> None:
        while True:
            try:
                await self._session(outbox)
            except Exception as exc:  # whatever the connection raises: said once, tried again with backoff
                self._went_down(exc)
            self._failures += 1
            low, high = self._backoff
            await anyio.sleep(min(high, low * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0))

    async def _session(self, outbox: MemoryObjectReceiveStream[str]) -> None:
        """One connection: subscribe, then send and receive until it fails."""
        # No retries of redis-py's own: a failure ends the session, and this module's backoff decides when to retry.
        client = Redis.from_url(
            self._url.get(),
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=TIMEOUT_S,
            health_check_interval=TIMEOUT_S,
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            while True:  # what waited while Redis was down is not sent now: its news are old
                try:
                    outbox.receive_nowait()
                except anyio.WouldBlock:
                    break
            self._came_up()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._send_all, client, outbox)
                    await self._receive_all(pubsub)
            finally:
                self._up = anyio.Event()
                self._down.set()
        finally:
            # Closed even when the server is stopping (cancelled): closing is local, and bounded all the same.
            with anyio.move_on_after(TIMEOUT_S, shield=True):
                await pubsub.aclose()
                await client.aclose()

    async def _send_all(self, client: Redis, outbox: MemoryObjectReceiveStream[str]) -> None:
        async for message in outbox:
            await client.publish(self.channel, message)

    async def _receive_all(self, pubsub: PubSub) -> None:
        while True:
            # Bounded, so that redis-py pings a quiet subscription (health_check_interval) and a dead one is noticed.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=TIMEOUT_S)
            if message is not None and message.get("type") == "message":
                await self._received(message["data"])

    async def _received(self, data: bytes | str) -> None:
        try:
            values = json.loads(data)
            account, origin = values["account"], values["origin"]
        except (ValueError, TypeError, KeyError):
            logger.debug("A message on %s that is not a dessert-mcp event was ignored", self.channel)
            return
        event = from_wire(values)
        if origin == self.origin or event is None or not isinstance(account, str):
            return  # this replica's own (its listeners heard it already), or a kind it does not know
        try:
            await self._sink(account, event)
        except Exception:  # one event's failure must not end the subscription
            logger.exception("Delivering another replica's event failed")

    def _came_up(self) -> None:
        self._up.set()
        self._down = anyio.Event()
        self._failures = 0
        if self._down_since_warned:
            self._down_since_warned = False
            logger.warning("Redis at %s is reachable again: events reach every replica again", self.where)
        elif not self._ever_up:
            logger.info("Events reach every replica through Redis at %s", self.where)
        self._ever_up = True

    def _went_down(self, exc: Exception) -> None:
        if not self._down_since_warned:
            self._down_since_warned = True
            logger.warning(
                "Redis at %s is unreachable (%s): this replica's listeners hear only its own events until it is "
                "back; reconnecting with backoff",
                self.where,
                _reason(exc),
            )


def _reason(exc: BaseException) -> str:
    """The first failure's type (a task group wraps it in a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return type(exc).__name__
