"""Single-flight: concurrent identical requests share one upstream call instead of each making their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    done: anyio.Event = field(default_factory=anyio.Event)
    result: T | None = None
    error: Exception | None = None
    abandoned: bool = False  # the leader was cancelled (or crashed): a follower takes over


class SingleFlight(Generic[T]):
    """Coalesces concurrent calls with the same key; nothing is cached once the call completes.

    The first caller (the leader) makes the call in its own task, so cancelling it aborts the upstream request;
    callers that arrive while it is in flight wait for its outcome. If the leader is cancelled, one waiter
    becomes the new leader. Only `shared_errors` are handed to waiters; anything else makes them retry.
    """

    def __init__(self, shared_errors: tuple[type[Exception], ...]) -> None:
        self._flights: dict[str, _Flight[T]] = {}
        self._shared_errors = shared_errors

    async def run(
        self, key: str, call: Callable[[], Awaitable[T]], *, on_shared: Callable[[], None] | None = None
    ) -> T:
        """`call()`'s outcome, or that of the identical call in flight; `on_shared` runs when it was the latter."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, call)
            await flight.done.wait()
            if not flight.abandoned and on_shared is not None:
                on_shared()
            if flight.error is not None:
                raise flight.error
            if not flight.abandoned:
                return flight.result  # type: ignore[return-value]  # set whenever error is None and not abandoned

    async def _lead(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        flight: _Flight[T] = _Flight()
        self._flights[key] = flight
        try:
            flight.result = await call()
            return flight.result
        except self._shared_errors as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.abandoned = True
            raise
        finally:
            del self._flights[key]
            flight.done.set()
