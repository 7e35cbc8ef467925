"""What one caller may cost the auth wing: throttles counted before the work, and request bodies capped as read.

Throttles live in the database (`Store.throttle_hit`, one atomic upsert), so every worker and replica counts
into the same window; an attempt is counted *before* the slow work it guards (a Dessert key check, a token
exchange) and refunded afterwards if it turns out not to count, so requests racing in parallel cannot all pass.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from starlette.types import Message, Receive, Scope, Send

if TYPE_CHECKING:  # `--auth dessert-key` imports this module without the database libraries
    from dessert_mcp.auth.store import Store

# The auth wing's forms and JSON bodies are a few hundred bytes; no route of it needs more than this.
MAX_BODY_BYTES: Final = 16 * 1024
MAX_QUERY_BYTES: Final = 8 * 1024


def address_bucket(host: str) -> str:
    """The throttle bucket of a client address: the address itself for IPv4, its /64 for IPv6 (one subscriber
    holds a whole /64, so counting single addresses would let it rotate through them)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def scope_bucket(scope: Scope) -> str:
    client = scope.get("client")
    return address_bucket(client[0]) if client else "unknown"


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    most: int


async def reserve(store: Store, limits: Sequence[Limit], *, window_s: float) -> bool:
    """Count one attempt against each limit in turn, atomically each, before the work; False if one is now past its
    most. The count is taken before anything is decided, so a burst in parallel is held to every limit.

    A refused attempt is not an attempt: counting stops at the limit it passed and everything it counted is given
    back. Put the narrow limits first (a sign-in, a client, an account; each on something that exists, never on a
    name the caller makes up) and the address last: a caller held by its own limit then never touches the address
    that others share, not even for a moment during a burst.
    """
    for i, limit in enumerate(limits):
        if await store.throttle_hit(limit.key, window_s=window_s) > limit.most:
            await refund(store, limits[: i + 1])
            return False
    return True


async def refund(store: Store, limits: Sequence[Limit]) -> None:
    """The reserved attempt did not count (it succeeded): take it back from every limit."""
    for limit in limits:
        await store.throttle_refund(limit.key)


async def answer(send: Send, status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> None:
    """A small JSON answer straight onto `send`."""
    data = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class CappedBody:
    """Wraps one request's `receive` and `send`: past `cap` bytes of body actually received (whatever the framing,
    chunked or not, whatever Content-Length said) it answers 413 itself, tells the app the client went away, and
    drops whatever the app still sends. Nothing past the cap is ever read into memory or a temporary file."""

    def __init__(self, receive: Receive, send: Send, cap: int = MAX_BODY_BYTES) -> None:
        self._receive = receive
        self._send = send
        self.cap = cap
        self.read = 0
        self.started = False
        self.refused = False

    @staticmethod
    def declared_too_large(scope: Scope, cap: int = MAX_BODY_BYTES) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value) > cap
                except ValueError:
                    return True
        return False

    async def refuse(self) -> None:
        self.refused = True
        if not self.started:
            self.started = True
            await answer(
                self._send,
                413,
                {"error": "invalid_request", "error_description": f"The request body is over {self.cap} bytes."},
                {"Connection": "close"},  # the rest of the body is never read
            )

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.cap:
                await self.refuse()
                return {"type": "http.disconnect"}
        return message

    async def read_all(self) -> bytes | None:
        """The whole body (at most `cap` bytes), or None if it was refused (413 sent) or the client went away."""
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    def replay(self, body: bytes) -> Receive:
        """A `receive` that hands the app `body`, read already by `read_all`, then listens for the client leaving."""
        given = False

        async def receive() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await self.receive()

        return receive

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
