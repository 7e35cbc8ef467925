"""`--auth dessert-key`, in front of the SDK: only so many keys not yet seen to work reach Dessert.

Without it every request with a new random key costs one Dessert call (the tool's), unthrottled: the server
would check keys for anyone. Here a request whose key this process has not seen work is counted before it goes
on, per client address (an IPv6 /64) and for the whole process, and refused with 429 past the limit; a key Dessert
refused is refused by the verifier for a while without asking again (`caller.KeyVerdicts`), and keys that worked
keep working whatever the counts. In memory only (this mode stores nothing): with several workers each counts
its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from dessert_mcp.auth.caller import KeyVerdicts, has_bearer, key_subject, unauthenticated
from dessert_mcp.auth.config import MCP_PATH
from dessert_mcp.auth.limits import answer, scope_bucket

# Requests with a key not yet seen to work, per window: per client address, and for the whole process.
NEW_KEYS_PER_ADDRESS: Final = 20
NEW_KEYS_OVERALL: Final = 300
NEW_KEYS_WINDOW_S: Final = 600
_WINDOWS_KEPT: Final = 65_536


class _Windows:
    """Fixed-window counters in memory, bounded (the least recently hit go first)."""

    def __init__(self, window_s: float, clock: Callable[[], float]) -> None:
        self.window_s = window_s
        self._clock = clock
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def hit(self, key: str) -> int:
        now = self._clock()
        start, count = self._counts.pop(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._counts[key] = (start, count + 1)
        while len(self._counts) > _WINDOWS_KEPT:
            self._counts.popitem(last=False)
        return count + 1

    def first_in_window(self, key: str) -> bool:
        return self.hit(key) == 1


class DessertKeyGate:
    """The ASGI layer around the app for `--auth dessert-key` (see the module's docstring); it also answers a
    request without any credential itself (RFC 6750 §3.1: no error code, the scope to ask for)."""

    def __init__(
        self,
        app: ASGIApp,
        verdicts: KeyVerdicts,
        *,
        per_address: int = NEW_KEYS_PER_ADDRESS,
        overall: int = NEW_KEYS_OVERALL,
        window_s: float = NEW_KEYS_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.verdicts = verdicts
        self.per_address = per_address
        self.overall = overall
        self._windows = _Windows(window_s, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != MCP_PATH or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if not has_bearer(scope):
            await unauthenticated(send, None)
            return
        subject = key_subject(_bearer(scope))
        known = self.verdicts.is_good(subject) or self.verdicts.is_refused(subject)
        if not known and self._windows.first_in_window("key:" + subject):
            # Each new key counts once per window, before Dessert is asked: parallel requests with fresh keys
            # cannot all get through, and one agent's parallel requests with its own new key count as one.
            over_address = self._windows.hit("addr:" + scope_bucket(scope)) > self.per_address
            over_all = self._windows.hit("all") > self.overall
            if over_address or over_all:
                await answer(
                    send,
                    429,
                    {"error": "slow_down", "error_description": "Too many new keys; wait and retry."},
                    {"Retry-After": str(int(self._windows.window_s))},
                )
                return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return str(value[7:].decode("latin-1").strip())
    return ""
