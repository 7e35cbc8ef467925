"""Shared answers: concurrent identical calls share one upstream call and, given a `ttl_s`, its answer is reused for
that long (DESSERT_CACHE_TTL_S: an agent polling the balance in a loop costs Dessert one request per `ttl_s`).

One entry per key, in flight or kept. The trade-off of a ttl is freshness: an answer can be up to `ttl_s` old (an
ad generated meanwhile is not in it yet). Failures are never kept, so an error clears as soon as Dessert recovers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

import anyio

T = TypeVar("T")

# Enough for every account a shared deployment serves at once; beyond it the oldest entries make room.
DEFAULT_MAX_ENTRIES: Final = 4096


@dataclass(eq=False)
class _Entry(Generic[T]):
    done: anyio.Event = field(default_factory=anyio.Event)
    result: T | None = None
    error: Exception | None = None
    abandoned: bool = False  # the leader was cancelled (or crashed): a follower takes over
    expires: float = 0.0  # once done and kept


class SingleFlight(Generic[T]):
    """Coalesces concurrent calls with the same key and keeps a success for `ttl_s` seconds (0: not at all), at most
    `max_entries` keys, on anyio's (monotonic) clock.

    The first caller (the leader) makes the call in its own task, so cancelling it aborts the upstream request;
    callers that arrive while it is in flight wait for its outcome. If the leader is cancelled, one waiter
    becomes the new leader. Only `shared_errors` are handed to waiters; anything else makes them retry. Keys that
    name the account (`client.account`) keep one account's answer from ever being another's.
    """

    def __init__(
        self,
        shared_errors: tuple[type[Exception], ...] = (),
        *,
        ttl_s: float = 0.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.ttl_s = ttl_s
        self._shared_errors = shared_errors
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, _Entry[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> T | None:
        """The answer kept for `key`, if it is still fresh."""
        entry = self._entries.get(key)
        if entry is None or not entry.done.is_set():
            return None
        if self._clock() >= entry.expires:
            del self._entries[key]
            return None
        return entry.result

    def put(self, key: Hashable, value: T) -> None:
        """Keep `value` for `key` for `ttl_s` seconds."""
        entry: _Entry[T] = _Entry(result=value, expires=self._clock() + self.ttl_s)
        entry.done.set()
        self._add(key, entry)

    async def run(
        self,
        key: Hashable,
        call: Callable[[], Awaitable[T]],
        *,
        on_shared: Callable[[], None] | None = None,
        on_kept: Callable[[], None] | None = None,
    ) -> T:
        """The answer kept for `key`, else that of the identical call in flight, else `call()`'s.

        `on_kept` runs when the answer was kept, `on_shared` when it came from a call in flight.
        """
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry.done.is_set():
                if (kept := self.get(key)) is not None:
                    if on_kept is not None:
                        on_kept()
                    return kept
                entry = None
            if entry is None:
                return await self._lead(key, call)
            await entry.done.wait()
            if not entry.abandoned and on_shared is not None:
                on_shared()
            if entry.error is not None:
                raise entry.error
            if not entry.abandoned:
                return entry.result  # type: ignore[return-value]  # set whenever error is None and not abandoned

    async def _lead(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        entry: _Entry[T] = _Entry()
        self._add(key, entry)
        try:
            entry.result = await call()
            entry.expires = self._clock() + self.ttl_s
            return entry.result
        except self._shared_errors as exc:
            entry.error = exc
            raise
        except BaseException:
            entry.abandoned = True
            raise
        finally:
            if (entry.error is not None or entry.abandoned or self.ttl_s <= 0) and self._entries.get(key) is entry:
                del self._entries[key]
            entry.done.set()

    def _add(self, key: Hashable, entry: _Entry[T]) -> None:
        self._entries.pop(key, None)  # re-inserted last: dicts keep insertion order, oldest first
        if len(self._entries) >= self._max_entries:
            now = self._clock()
            self._entries = {k: e for k, e in self._entries.items() if not e.done.is_set() or e.expires > now}
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = entry
