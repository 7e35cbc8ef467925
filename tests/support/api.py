"""A canary key that must never show, and a fake Dessert API for `httpx2.MockTransport`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2

# A key that must never show up in any output; tests grep for it (and for fragments of it).
CANARY_KEY = "dsk_live_CANARY_9f8e7d6c5b4a392817161514"
FAKE_BASE_URL = "https://api.dessert.test"

DOCS_BALANCE: dict[str, Any] = {
    "credits_balance": 205,
    "credits_balance_usd_equivalent": 20.50,
    "credits_lifetime_purchased": 500,
    "auto_recharge_enabled": True,
    "auto_recharge_threshold": 20,
    "auto_recharge_amount_usd": 25.0,
    "pricing": {"credit_usd": 0.10, "static_ad_credits": 5, "full_ad_credits": 15},
}

DOCS_USAGE: dict[str, Any] = {
    "recent_transactions": [
        {
            "type": "Deduction",
            "credits_delta": -45,
            "balance_after": 205,
            "usd_amount": None,
            "description": "API ad generation (count=3, format=full)",
            "at": "2026-05-19T18:24:01.000Z",
        },
        {
            "type": "Purchase",
            "credits_delta": 250,
            "balance_after": 250,
            "usd_amount": 25.0,
            "description": "Auto-recharge",
            "at": "2026-05-19T18:23:48.000Z",
        },
        {
            "type": "Bonus",
            "credits_delta": 50,
            "balance_after": 50,
            "usd_amount": None,
            "description": "Welcome bonus",
            "at": "2026-05-12T15:08:22.000Z",
        },
    ]
}

Handler = Callable[[httpx2.Request], httpx2.Response]


def streamed(response: httpx2.Response) -> httpx2.Response:
    """`response` with its body as an unread stream, as from a real connection.

    `httpx2.Response(content=...)` reads (and decodes) its body at once; the client reads raw bytes from the wire,
    so fakes hand it a stream. A compressed fake body must be built with `stream=` in the first place.
    """
    if not response.is_stream_consumed:
        return response
    assert "content-encoding" not in response.headers, "build compressed fake bodies with stream=httpx2.ByteStream"
    return httpx2.Response(response.status_code, headers=response.headers, stream=httpx2.ByteStream(response.content))


class FakeDessertAPI:
    """A fake Dessert API for `httpx2.MockTransport`: answers the routes it was given, fails loudly otherwise."""

    def __init__(self, routes: dict[str, Any | Handler] | None = None, *, key: str = CANARY_KEY) -> None:
        self.routes: dict[str, Any | Handler] = (
            routes if routes is not None else {"/v1/balance": DOCS_BALANCE, "/v1/usage": DOCS_USAGE}
        )
        self.key = key
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        assert request.method == "GET", f"unexpected {request.method} {request.url}"
        assert str(request.url).startswith(FAKE_BASE_URL), f"request left the configured origin: {request.url}"
        route = self.routes.get(request.url.path)
        assert route is not None, f"unexpected request to {request.url.path}"
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return streamed(httpx2.Response(401, json={"error": "unauthorized", "message": "Invalid API key."}))
        if callable(route):
            return streamed(route(request))
        body = httpx2.ByteStream(json.dumps(route).encode())
        return httpx2.Response(200, stream=body, headers={"content-type": "application/json"})

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)


class ClosingTransport(httpx2.MockTransport):
    """The fake API's transport, counting how often its owner closed it."""

    def __init__(self, api: FakeDessertAPI) -> None:
        super().__init__(api)
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def assert_no_secret(text: str, key: str = CANARY_KEY) -> None:
    """Neither the key nor any 8-character run of it appears in `text`."""
    assert key not in text
    for start in range(len(key) - 7):
        assert key[start : start + 8] not in text, f"fragment {key[start : start + 8]!r} of the key leaked"
