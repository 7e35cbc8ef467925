"""A short cache of successful answers, per account: an agent polling the balance in a loop costs Dessert one request
per `ttl_s` instead of one per call. Off (ttl 0) unless DESSERT_CACHE_TTL_S says otherwise.

The trade-off is freshness: with a ttl of N seconds an answer can be up to N seconds old (an ad generated meanwhile
is not in it yet). Failures are never cached, so an error clears as soon as Dessert recovers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

import anyio

T = TypeVar("T")

# Enough for every account a shared deployment serves at once; beyond it the oldest entries make room.
DEFAULT_MAX_ENTRIES: Final = 4096


class TTLCache(Generic[T]):
    """Values by key for `ttl_s` seconds on anyio's (monotonic) clock, at most `max_entries` of them.

    Keys name the account and the route (`(client.account, "/v1/balance")`), so one account's answer is never
    another's, whether one service serves one account or many.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: tuple[str, str], value: T) -> None:
        now = self._clock()
        self._entries.pop(key, None)  # re-inserted last: dicts keep insertion order, oldest first
        if len(self._entries) >= self._max_entries:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (now + self.ttl_s, value)


K = TypeVar("K")

# Answers whose built result is kept: one per account calling at once is the point; the bound caps the memory that
# answers no longer in use hold (with the cache off every upstream answer is a new object) at a few hundred KB.
DEFAULT_MAX_BUILT: Final = 256


class BuiltFrom(Generic[K, T]):
    """`build(key)`, reused while that very object comes back (identity, not equality), for the most recent keys.

    Calls that shared one answer (one upstream request, or the cache above) get the same object, so they share
    what is built from it; with many accounts calling at once, each account's current answer keeps its own entry.
    Equal answers of two accounts are distinct objects, so nothing built ever crosses accounts.
    """

    def __init__(self, build: Callable[[K], T], *, max_entries: int = DEFAULT_MAX_BUILT) -> None:
        self._build = build
        self._max_entries = max_entries
        # By id(key); each entry holds its key, so that id cannot be reused by another object while it is here.
        self._built: dict[int, tuple[K, T]] = {}

    def __len__(self) -> int:
        return len(self._built)

    def __call__(self, key: K) -> T:
        entry = self._built.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self._build(key)
        if len(self._built) >= self._max_entries:
            del self._built[next(iter(self._built))]  # dicts keep insertion order: the oldest goes
        self._built[id(key)] = (key, value)
        return value
