"""The ledger's poller against the live sandbox, in virtual time: a clock the test advances instead of sleeping."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from dessert_mcp.auth.store import Store
from dessert_mcp.client import DessertClient
from dessert_mcp.config import DEFAULT_LEDGER_POLL_MAX_S, DEFAULT_LEDGER_POLL_MIN_S
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.ledger.poller import (
    TARGET_NEW_ROWS,
    Poller,
    PollTarget,
    gets_per_hour,
    next_interval,
)
from dessert_mcp.models import USAGE_FEED_SIZE, USAGE_PATH, parse_timestamp
from dessert_mcp.sandbox.activity import LiveAccount
from tests.support.auth import Clock
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_settings

ACCOUNT = "key:test-account"
DOCS = Path(__file__).parents[2] / "docs" / "ledger-polling.md"
MIN_S, MAX_S = 10.0, 300.0


@asynccontextmanager
async def polling(
    sandbox: ThreadedFaultySandbox, clock: Clock, *, key: str | None = None, **kw: Any
) -> AsyncIterator[tuple[Poller, InMemoryLedger]]:
    """A poller (and its in-memory ledger) reading one account of `sandbox`, on `clock`."""
    settings = sandbox_settings(sandbox, key=key, max_attempts=1)
    async with DessertClient.from_settings(settings) as client:

        async def targets() -> Sequence[PollTarget]:
            return [PollTarget(client, named)]

        ledger = InMemoryLedger()
        yield Poller(ledger, targets, min_s=MIN_S, max_s=MAX_S, first_read_s=0, clock=clock, **kw), ledger


async def named() -> str:
    return ACCOUNT


def only_watch(poller: Poller) -> Any:
    (watch,) = poller.watches.values()
    return watch


async def run_for(poller: Poller, clock: Clock, seconds: float) -> int:
    """Step the poller through `seconds` of virtual time; how many steps it took."""
    end, steps = clock.now + seconds, 0
    while clock.now < end:
        clock.advance(await poller.step())
        steps += 1
    return steps


def live(clock: Clock, rate: float, seed: int = 1) -> ThreadedFaultySandbox:
    return ThreadedFaultySandbox(account=lambda: LiveAccount(rate=rate, seed=seed, clock=clock))


def usage_reads(sandbox: ThreadedFaultySandbox) -> int:
    return int(sandbox.stats()["requests"].get(USAGE_PATH, 0))


def test_the_interval_lets_under_half_a_window_accrue_within_the_bounds() -> None:
    assert TARGET_NEW_ROWS < USAGE_FEED_SIZE / 2
    assert next_interval(1.0, min_s=MIN_S, max_s=MAX_S) == TARGET_NEW_ROWS
    assert next_interval(0.0, min_s=MIN_S, max_s=MAX_S) == MAX_S
    assert next_interval(1e-6, min_s=MIN_S, max_s=MAX_S) == MAX_S
    assert next_interval(100.0, min_s=MIN_S, max_s=MAX_S) == MIN_S


def test_the_upstream_cost_an_hour_follows_from_the_schedule() -> None:
    """docs/ledger-polling.md's table, row by row, from the schedule with the default bounds."""
    bounds = {"min_s": DEFAULT_LEDGER_POLL_MIN_S, "max_s": DEFAULT_LEDGER_POLL_MAX_S}
    per_second = {"0 (idle)": 0.0, "1 a minute": 1 / 60, "6 a minute": 0.1, "1 a second": 1.0, "2 a second": 2.0}
    table = DOCS.read_text().split("| transactions | usage interval (s) | GETs per hour |", 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()[1:]]
    assert [row[0] for row in rows] == list(per_second)
    for label, interval, gets in rows:
        rate = per_second[label]
        assert next_interval(rate, **bounds) == pytest.approx(float(interval)), label
        assert gets_per_hour(rate, **bounds) == pytest.approx(float(gets), abs=0.5), label


@pytest.mark.parametrize(("rate", "seed"), [(0.05, 1), (1.0, 2), (TARGET_NEW_ROWS / MIN_S, 3)])
async def test_the_poller_keeps_up_for_many_windows_at_a_rate_within_its_bounds(rate: float, seed: int) -> None:
    clock = Clock()
    with live(clock, rate, seed) as sandbox:
        async with polling(sandbox, clock) as (poller, ledger):
            start = clock.now
            await run_for(poller, clock, 40 * USAGE_FEED_SIZE / rate)  # about 40 windows scroll by
            served = sandbox.account.ledger
            (status,) = (await ledger.status()).accounts
            assert status.oldest_at is not None
            after_first = status.oldest_at + timedelta(milliseconds=1)  # rows of that same instant may be older
            since_first_read = await ledger.history(ACCOUNT, since=after_first, limit=1)
            kept = [row async for row in ledger.export(ACCOUNT)]
    # One continuous stretch from the first window read on: the only seam is the history before it.
    assert status.stretches == 1
    assert since_first_read.history_complete
    assert since_first_read.seams == ()
    assert only_watch(poller).gaps == 0
    # Every row from the first window read on is kept, as served, and the balance snapshots are in the ledger too.
    served_since = [row for row in served if parse_timestamp(row["at"]) >= after_first]
    assert [
        {k: row.as_dict()[k] for k in served[0]} for row in kept if row.row.transaction.timestamp >= after_first
    ] == served_since
    assert len(served_since) > 30 * USAGE_FEED_SIZE
    assert status.balance_snapshots >= (clock.now - start) // (2 * MAX_S)  # at least every max_s polls


async def test_the_poller_reports_a_gap_at_a_rate_beyond_its_bounds(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.WARNING, "dessert_mcp.ledger")
    with live(clock, rate=3 * TARGET_NEW_ROWS / MIN_S) as sandbox:
        async with polling(sandbox, clock) as (poller, ledger):
            await run_for(poller, clock, 20 * MIN_S)
            (status,) = (await ledger.status()).accounts
    assert status.seams["gap"] + status.seams["unverified"] > 0
    assert only_watch(poller).gaps > 1
    # Said once while the poller stays behind, not at every read.
    assert caplog.text.count("the ledger records a gap. Lower DESSERT_LEDGER_POLL_MIN_S to keep up.") == 1


@pytest.mark.parametrize(("rate", "expected"), [(None, 24), (1.0, 192)], ids=["idle", "1 transaction a second"])
async def test_an_hour_of_polling_costs_the_gets_the_schedule_says(rate: float | None, expected: float) -> None:
    clock = Clock()
    sandbox = ThreadedFaultySandbox() if rate is None else live(clock, rate)
    with sandbox:
        sandbox.reset()
        async with polling(sandbox, clock) as (poller, _):
            await run_for(poller, clock, 3600)
            gets = sandbox.stats()["total"]
    # The rate is estimated from each answer's rows, which a Poisson account spreads around its mean.
    assert expected * 0.85 <= gets <= expected * 1.15 + 2


async def test_errors_back_off_and_a_retry_after_is_honoured() -> None:
    clock = Clock()
    with ThreadedFaultySandbox() as sandbox:
        async with polling(sandbox, clock) as (poller, _):
            sandbox.add_fault(status=503, times=3)
            assert await poller.step() <= MIN_S
            watch = only_watch(poller)
            waits = []
            for _ in range(2):
                waits.append(watch.due - clock.now)
                clock.advance(watch.due - clock.now)
                await poller.step()
            assert waits[0] < waits[1] <= MAX_S  # exponential
            assert watch.failures == 3
            sandbox.add_fault(status=429, headers={"Retry-After": "250"})
            clock.advance(watch.due - clock.now)
            await poller.step()
            assert watch.due - clock.now >= 250
            clock.advance(watch.due - clock.now)
            await poller.step()
            assert watch.failures == 0
            assert watch.reads == 1


async def test_an_account_whose_key_is_rejected_stops_being_polled(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, "dessert_mcp.ledger")
    with ThreadedFaultySandbox() as sandbox:
        async with polling(sandbox, clock, key="dsk_sandbox_not_the_right_key_000000") as (poller, ledger):
            await run_for(poller, clock, 2 * MAX_S)
            assert usage_reads(sandbox) == 1
            assert (await ledger.status()).accounts == ()
    assert "Stopped polling account key:test-account for the ledger" in caplog.text
    assert "not_the_right_key" not in caplog.text


async def test_accounts_come_and_go_with_the_targets() -> None:
    clock = Clock()
    current: list[PollTarget] = []

    async def targets() -> Sequence[PollTarget]:
        return list(current)

    with ThreadedFaultySandbox() as sandbox:
        async with DessertClient.from_settings(sandbox_settings(sandbox)) as client:
            poller = Poller(InMemoryLedger(), targets, min_s=MIN_S, max_s=MAX_S, clock=clock)
            assert await poller.step() == MIN_S  # nothing to read: look again for new accounts soon
            assert usage_reads(sandbox) == 0
            current.append(PollTarget(client, named))
            await run_for(poller, clock, MAX_S - 1)
            assert usage_reads(sandbox) == 0  # a new account is first read max_s after it appears
            await run_for(poller, clock, 1)
            assert usage_reads(sandbox) == 1
            current.clear()
            await run_for(poller, clock, 2 * MAX_S)
            assert usage_reads(sandbox) == 1
            assert poller.watches == {}


async def test_replicas_sharing_a_database_never_poll_one_account_at_the_same_time(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(f"sqlite:///{tmp_path / 'shared.db'}", clock=clock)
    await store.migrate()
    try:
        with live(clock, rate=0.5) as sandbox:
            async with (
                polling(sandbox, clock, lease=functools.partial(store.take_lease, holder="first")) as (first, _),
                polling(sandbox, clock, lease=functools.partial(store.take_lease, holder="second")) as (second, _),
            ):
                reads: list[int] = []
                for _ in range(60):
                    before = usage_reads(sandbox)
                    delay = min(await first.step(), await second.step())
                    reads.append(usage_reads(sandbox) - before)
                    clock.advance(delay)
                assert max(reads) == 1  # one replica at a time, and together no more often than one alone
                assert only_watch(first).reads + only_watch(second).reads == sum(reads)
    finally:
        await store.aclose()


@pytest.mark.poller
async def test_the_run_loop_sleeps_between_steps_and_survives_a_failing_step() -> None:
    clock = Clock()
    slept: list[float] = []
    calls = 0

    async def targets() -> Sequence[PollTarget]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        if calls == 3:
            raise KeyboardInterrupt  # ends the test's loop
        return []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    poller = Poller(InMemoryLedger(), targets, min_s=MIN_S, max_s=MAX_S, clock=clock, sleep=sleep)
    with pytest.raises(KeyboardInterrupt):
        await poller.run()
    assert slept == [MIN_S, MIN_S]


async def test_a_tool_calls_answer_counts_as_a_read_and_schedules_the_next_from_its_rows() -> None:
    clock = Clock()
    with live(clock, rate=1.0) as sandbox:
        async with (
            polling(sandbox, clock) as (poller, _),
            DessertClient.from_settings(sandbox_settings(sandbox)) as call,
        ):
            poller.answered(call.account, await call.get_usage())  # what a tool call read, with the same key
            assert TARGET_NEW_ROWS * 0.7 <= only_watch(poller).interval <= TARGET_NEW_ROWS * 1.3
            before = usage_reads(sandbox)
            await run_for(poller, clock, only_watch(poller).interval - 1)
            assert usage_reads(sandbox) == before  # the call's answer was the read
            await run_for(poller, clock, 2)
            assert usage_reads(sandbox) == before + 1


async def test_in_the_tests_a_poller_reads_nothing_unless_the_test_is_marked() -> None:
    asked = []

    async def targets() -> Sequence[PollTarget]:
        asked.append(True)
        return []

    poller = Poller(InMemoryLedger(), targets, first_read_s=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert asked == []


async def test_a_lease_database_that_fails_skips_the_read_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()

    async def broken(name: str, *, ttl_s: float) -> bool:
        raise OSError("the database is gone")

    with ThreadedFaultySandbox() as sandbox:
        async with polling(sandbox, clock, lease=broken) as (poller, _):
            assert await poller.step() == MIN_S
            assert usage_reads(sandbox) == 0
            assert only_watch(poller).due == clock.now + MIN_S
    assert "The ledger could not keep a polled answer (OSError); polling goes on" in caplog.text


async def test_a_stopping_poller_gives_up_the_leases_it_holds_once_and_a_failing_release_never_raises() -> None:
    clock = Clock()
    released: list[set[str]] = []
    holder = {"ledger-poll:" + ACCOUNT: "us"}

    async def lease(name: str, *, ttl_s: float) -> bool:
        return holder.get(name) == "us"

    async def release(names: Collection[str]) -> None:
        released.append(set(names))
        raise OSError("the database is gone")

    with ThreadedFaultySandbox() as sandbox:
        async with polling(sandbox, clock, lease=lease, release=release) as (poller, _):
            await poller.release_leases()
            assert released == []  # none taken yet
            await poller.step()
            await poller.release_leases()  # the release fails: the lease runs out instead
            await poller.release_leases()
            assert released == [{"ledger-poll:" + ACCOUNT}]
            holder["ledger-poll:" + ACCOUNT] = "another replica"
            clock.advance(only_watch(poller).due - clock.now)
            await poller.step()  # taken meanwhile by another: not ours to give up
            await poller.release_leases()
            assert released == [{"ledger-poll:" + ACCOUNT}]


async def test_a_failed_balance_read_keeps_the_usage_answer_and_is_tried_again_next_time() -> None:
    clock = Clock()
    with ThreadedFaultySandbox() as sandbox:
        async with polling(sandbox, clock) as (poller, ledger):
            sandbox.add_fault(path="/v1/balance", status=503)
            await poller.step()
            (status,) = (await ledger.status()).accounts
            assert (status.rows, status.balance_snapshots) == (13, 0)
            assert only_watch(poller).balance_read is None
            clock.advance(only_watch(poller).due - clock.now)
            await poller.step()
            (status,) = (await ledger.status()).accounts
            assert status.balance_snapshots == 1
