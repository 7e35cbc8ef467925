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


async def test_a_cancelled_leader_hands_the_call_to_a_waiter_which_is_not_counted_as_shared() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,))
    upstream = Upstream()
    results: list[str] = []
    shared: list[str] = []
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await flights.run("k", upstream)

    async def follower() -> None:
        results.append(await flights.run("k", upstream, on_shared=lambda: shared.append("shared")))

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
    assert shared == []


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


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_answers_kept_are_counted_as_kept_and_answers_in_flight_as_shared() -> None:
    flights: SingleFlight[str] = SingleFlight((ValueError,), ttl_s=60.0, clock=Clock())
    upstream = Upstream()
    seen: list[str] = []
    results: list[str] = []

    async def call() -> None:
        answer = await flights.run(
            "k", upstream, on_shared=lambda: seen.append("shared"), on_kept=lambda: seen.append("kept")
        )
        results.append(answer)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)  # the leader: neither shared nor kept
        await upstream.started.wait()
        for _ in range(3):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert seen == ["shared"] * 3
    await call()
    assert seen == ["shared"] * 3 + ["kept"]
    assert results == ["answer-1"] * 5
    assert upstream.calls == 1


async def test_an_answer_is_kept_for_its_ttl_even_under_a_second_and_asked_again_after_it() -> None:
    clock = Clock()
    flights: SingleFlight[str] = SingleFlight((ValueError,), ttl_s=0.5, clock=clock)
    upstream = Upstream()
    upstream.release.set()
    assert await flights.run("k", upstream) == "answer-1"
    clock.now += 0.499
    assert await flights.run("k", upstream) == "answer-1"
    clock.now += 0.001
    assert await flights.run("k", upstream) == "answer-2"


async def test_failures_cancelled_calls_and_unkept_answers_leave_no_entry_behind() -> None:
    kept: SingleFlight[str] = SingleFlight((ValueError,), ttl_s=60.0, clock=Clock())

    async def failing() -> str:
        raise ValueError("upstream said no")

    async def crashing() -> str:
        raise RuntimeError("a bug, not an answer")

    with pytest.raises(ValueError, match="upstream said no"):
        await kept.run("shared error", failing)
    with pytest.raises(RuntimeError):
        await kept.run("other error", crashing)
    upstream = Upstream()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(kept.run, "cancelled", upstream)
            await upstream.started.wait()
            scope.cancel()
    assert len(kept) == 0
    unkept: SingleFlight[str] = SingleFlight((ValueError,))
    upstream.release.set()
    await unkept.run("k", upstream)
    assert len(unkept) == 0


async def test_a_full_table_never_drops_a_call_in_flight_and_drops_an_answer_expiring_that_instant_first() -> None:
    clock = Clock()
    flights: SingleFlight[str] = SingleFlight((ValueError,), ttl_s=10.0, max_entries=2, clock=clock)
    upstream = Upstream()
    results: list[str] = []

    async def call() -> None:
        results.append(await flights.run("in flight", upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await upstream.started.wait()
        flights.put("expiring", "old")
        clock.now += 10.0  # "expiring" is stale from this instant on
        flights.put("new", "fresh")  # full: "expiring" makes room, the call in flight stays
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert upstream.calls == 1
    assert results == ["answer-1", "answer-1"]
    assert flights.get("new") == "fresh"


def test_an_answer_put_again_counts_as_the_newest_when_the_table_makes_room() -> None:
    flights: SingleFlight[int] = SingleFlight(ttl_s=60.0, max_entries=3, clock=Clock())
    flights.put("a", 1)
    flights.put("b", 2)
    flights.put("a", 3)
    flights.put("c", 4)
    flights.put("d", 5)  # full, nothing expired: the oldest, b, goes
    assert [flights.get(k) for k in "abcd"] == [3, None, 4, 5]
