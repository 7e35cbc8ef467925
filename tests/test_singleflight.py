from __future__ import annotations

import anyio
import pytest

from dessert_mcp.singleflight import SingleFlight


class Upstream:
    """A call that blocks until released, counting how often it was made."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = anyio.Event()
        self.started = anyio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return f"answer-{self.calls}"


async def test_concurrent_identical_calls_share_one_upstream_call() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    upstream = Upstream()
    results: list[str] = []

    async def call() -> None:
        results.append(await flights.run("k", upstream))

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(call)
        await upstream.started.wait()
        upstream.release.set()
    assert upstream.calls == 1
    assert results == ["answer-1"] * 100


async def test_nothing_is_cached_after_the_call_completes() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    upstream = Upstream()
    upstream.release.set()
    assert await flights.run("k", upstream) == "answer-1"
    assert await flights.run("k", upstream) == "answer-2"


async def test_different_keys_do_not_share() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    upstream = Upstream()
    upstream.release.set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(flights.run, "a", upstream)
        tg.start_soon(flights.run, "b", upstream)
    assert upstream.calls == 2


async def test_a_shared_error_reaches_every_waiter() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    gate = anyio.Event()
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise ValueError("upstream said no")

    errors: list[str] = []

    async def call() -> None:
        with pytest.raises(ValueError, match="upstream said no") as info:
            await flights.run("k", failing)
        errors.append(str(info.value))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert calls == 1
    assert len(errors) == 5


async def test_a_cancelled_leader_hands_the_call_to_a_waiter() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    upstream = Upstream()
    results: list[str] = []
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await flights.run("k", upstream)

    async def follower() -> None:
        results.append(await flights.run("k", upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await upstream.started.wait()
        tg.start_soon(follower)
        await anyio.wait_all_tasks_blocked()
        leader_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert upstream.calls == 2
    assert results == ["answer-2"]


async def test_cancelling_the_only_caller_abandons_the_flight_and_the_next_call_starts_fresh() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    upstream = Upstream()
    scope = anyio.CancelScope()

    async def only() -> None:
        with scope:
            await flights.run("k", upstream)

    async with anyio.create_task_group() as tg:
        tg.start_soon(only)
        await upstream.started.wait()
        scope.cancel()
    upstream.release.set()
    assert await flights.run("k", upstream) == "answer-2"
