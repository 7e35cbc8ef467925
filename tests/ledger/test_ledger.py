"""The ledger's behaviour, the same on every backend (in memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from dessert_mcp.ledger import EXPORT_FIELDS, InMemoryLedger, Ledger, LedgerRow, key_account, new_account_secret
from dessert_mcp.ledger.coverage import encode_cursor
from dessert_mcp.models import Balance, Transaction
from tests.ledger.conftest import MakeLedger
from tests.support.api import CANARY_KEY, DOCS_BALANCE
from tests.support.ledger import T0, chain, read_at, tx, window

ACCOUNT = "key:test"


def txs(page_rows: Sequence[LedgerRow]) -> list[Transaction]:
    return [r.transaction for r in page_rows]


async def test_windows_that_share_rows_join_into_one_complete_history(ledger: Ledger) -> None:
    rows = chain([-5, -15, 100, -5] * 30)
    for end in (50, 90, 120):
        outcome = await ledger.record_usage(ACCOUNT, window(rows, end), read_at(rows, end))
    assert outcome.placement == "joined"
    assert outcome.added == 30
    page = await ledger.history(ACCOUNT, since=rows[71].timestamp, limit=500)
    assert txs(page.rows) == list(reversed(rows[71:120]))
    assert page.history_complete
    assert page.seams == ()


async def test_a_window_that_merely_chains_is_joined_by_an_unverified_seam(ledger: Ledger) -> None:
    rows = chain([-5] * 100)
    await ledger.record_usage(ACCOUNT, window(rows, 50), read_at(rows, 50) - timedelta(seconds=30))
    outcome = await ledger.record_usage(ACCOUNT, window(rows, 100), read_at(rows, 100))
    assert outcome.placement == "unverified"
    page = await ledger.history(ACCOUNT, since=rows[10].timestamp, limit=500)
    assert txs(page.rows) == list(reversed(rows[10:]))
    assert not page.history_complete
    assert [(s.kind, s.after, s.before) for s in page.seams] == [("unverified", rows[49].timestamp, rows[50].timestamp)]


async def test_a_window_that_does_not_connect_records_the_gap_it_may_hide(ledger: Ledger) -> None:
    rows = chain([-5] * 130)
    await ledger.record_usage(ACCOUNT, window(rows, 50), read_at(rows, 50))
    outcome = await ledger.record_usage(ACCOUNT, window(rows, 130), read_at(rows, 130))
    assert outcome.placement == "gap"
    page = await ledger.history(ACCOUNT, since=rows[1].timestamp, until=rows[100].timestamp)
    assert not page.history_complete
    assert ("gap", rows[49].timestamp, rows[80].timestamp) in [(s.kind, s.after, s.before) for s in page.seams]
    assert (await ledger.history(ACCOUNT, since=rows[81].timestamp)).history_complete


async def test_an_older_window_arriving_later_closes_the_gap(ledger: Ledger) -> None:
    rows = chain([-5, 7, -3] * 40)
    await ledger.record_usage(ACCOUNT, window(rows, 120), read_at(rows, 120))
    await ledger.record_usage(ACCOUNT, window(rows, 40), read_at(rows, 40))
    outcome = await ledger.record_usage(ACCOUNT, window(rows, 85), read_at(rows, 85))
    assert (outcome.placement, outcome.added) == ("joined", 30)
    page = await ledger.history(ACCOUNT, limit=500)
    assert txs(page.rows) == list(reversed(rows))
    assert page.history_complete  # the oldest answer was shorter than 50 rows: nothing came before it
    assert (await ledger.status()).accounts[0].stretches == 1


async def test_a_chain_break_inside_one_answer_is_kept_as_returned_and_flagged(ledger: Ledger) -> None:
    rows = chain([-5] * 10)
    broken = [*rows[:5], tx(-5, 1, rows[5].timestamp), *rows[6:]]
    outcome = await ledger.record_usage(ACCOUNT, list(reversed(broken)), read_at(rows, 10))
    assert outcome.flagged == 2  # the row that does not follow, and the one that does not follow it
    page = await ledger.history(ACCOUNT)
    assert txs(page.rows) == list(reversed(broken))
    assert [sorted(r.flags) for r in page.rows if r.flags] == [["chain_break"], ["chain_break"]]
    assert not page.history_complete
    assert any(s.kind == "gap" and s.before == rows[5].timestamp for s in page.seams)


async def test_identical_rows_at_one_instant_leave_the_placement_open_and_say_so(make_ledger: MakeLedger) -> None:
    # A deduction and its refund, again and again, in one second: which copies two answers share, nobody can tell.
    ledger = make_ledger(feed_size=2)
    at = T0
    rows = [tx(-5, 95, at), tx(5, 100, at, kind="Refund")] * 3
    await ledger.record_usage(ACCOUNT, list(reversed(rows[:2])), at)
    outcome = await ledger.record_usage(ACCOUNT, list(reversed(rows[2:4])), at)
    assert outcome.placement == "ambiguous"
    page = await ledger.history(ACCOUNT)
    assert len(page.rows) == 4  # kept, not merged by a guess
    assert all("ambiguous" in r.flags for r in page.rows[:2])
    assert not page.history_complete
    assert any(s.kind == "ambiguous" for s in page.seams)


async def test_a_window_contradicting_stored_rows_is_kept_and_flagged(ledger: Ledger) -> None:
    rows = chain([-5] * 60)
    await ledger.record_usage(ACCOUNT, window(rows, 60), read_at(rows, 60))
    rewritten = chain([-6] * 60)
    outcome = await ledger.record_usage(ACCOUNT, window(rewritten, 60), read_at(rows, 60))
    assert outcome.placement == "conflict"
    page = await ledger.history(ACCOUNT, limit=500)
    assert len(page.rows) == 100
    assert sum(1 for r in page.rows if "conflict" in r.flags) == 50
    assert not page.history_complete


async def test_pages_walk_a_range_newest_first_without_repeating_or_skipping(ledger: Ledger) -> None:
    rows = chain([-1] * 45, step=timedelta(0))  # one instant: the cursor must count within it
    await ledger.record_usage(ACCOUNT, list(reversed(rows)), T0 + timedelta(seconds=1))
    seen, cursor = [], None
    while True:
        page = await ledger.history(ACCOUNT, limit=7, cursor=cursor)
        seen += txs(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(rows))


async def test_a_cursor_from_another_range_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="another range"):
        await ledger.history(ACCOUNT, since=T0, cursor=encode_cursor(T0, 0, None, None))
    with pytest.raises(ValueError, match="not made by this ledger"):
        await ledger.history(ACCOUNT, cursor="!!")


async def test_spend_counts_per_day_by_type_and_by_ad_format(ledger: Ledger) -> None:
    rows = chain(
        [-15, -5, 5, -30, 250],
        step=timedelta(hours=10),
        kinds=["Deduction", "Deduction", "Refund", "Deduction", "Purchase"],
        descriptions=[
            "API ad generation (count=1, format=full)",
            "API ad generation (count=1, format=static)",
            "Refund (format=static)",
            "something new",
            "Auto-recharge",
        ],
    )
    await ledger.record_usage(ACCOUNT, list(reversed(rows)), rows[-1].timestamp + timedelta(hours=1))
    report = await ledger.spend(ACCOUNT, period="day")
    assert report.history_complete
    assert [b.start.day for b in report.buckets] == [1, 2]
    assert report.total.by_type["Deduction"].credits == -50
    assert report.total.by_format["full"].credits == -15
    assert report.total.by_format["static"].credits == 0
    assert report.total.by_format["unparsed"].transactions == 1
    assert report.buckets[0].by_type["Refund"].transactions == 1
    daily = await ledger.daily_net_spend(ACCOUNT)
    assert [(d.net_credits, d.complete) for d in daily] == [(15, True), (30, True)]


async def test_forget_deletes_an_account_and_prune_the_old_rows(ledger: Ledger) -> None:
    rows = chain([-5] * 40)
    await ledger.record_usage(ACCOUNT, window(rows, 40), read_at(rows, 40))
    await ledger.record_usage("key:other", window(rows, 40), read_at(rows, 40))
    assert await ledger.prune(rows[10].timestamp) == 20
    page = await ledger.history(ACCOUNT, limit=500)
    assert len(page.rows) == 30
    assert not page.history_complete  # the start of history is gone
    assert await ledger.forget(ACCOUNT) == 30
    assert [a.account for a in (await ledger.status()).accounts] == ["key:other"]
    assert [e.account async for e in ledger.export()] == ["key:other"] * 30


async def test_an_account_id_never_shows_the_key_and_stays_the_same_for_one_secret(ledger: Ledger) -> None:
    account = await ledger.account_for_key(CANARY_KEY)
    assert account == await ledger.account_for_key(CANARY_KEY)
    assert account != await InMemoryLedger().account_for_key(CANARY_KEY)  # another secret
    assert CANARY_KEY[9:15].lower() not in account.lower()
    secret = new_account_secret()
    assert key_account(CANARY_KEY, secret) == key_account(CANARY_KEY, secret)
    with pytest.raises(ValueError, match="too short"):
        key_account(CANARY_KEY, b"short")


async def test_a_chain_break_next_to_a_stored_row_flags_the_stored_row(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(feed_size=8)
    rows = chain([-5] * 15)
    await ledger.record_usage(ACCOUNT, list(reversed(rows[5:13])), read_at(rows, 13))
    bad = tx(-5, 1, rows[4].timestamp)  # a balance the rows around it contradict
    older = [*rows[:4], bad, *rows[5:8]]
    outcome = await ledger.record_usage(ACCOUNT, list(reversed(older)), read_at(rows, 8))
    assert (outcome.placement, outcome.added) == ("joined", 5)
    page = await ledger.history(ACCOUNT, limit=500)
    flagged = {r.transaction.at: sorted(r.flags) for r in page.rows if r.flags}
    assert flagged == {bad.at: ["chain_break"], rows[5].at: ["chain_break"]}


async def test_balance_snapshots_are_kept_as_a_time_series(ledger: Ledger) -> None:
    first, second = Balance.model_validate(DOCS_BALANCE), Balance.model_validate(DOCS_BALANCE | {"credits_balance": 9})
    await ledger.record_balance(ACCOUNT, second, T0 + timedelta(hours=1))
    await ledger.record_balance(ACCOUNT, first, T0)
    found = await ledger.balances(ACCOUNT)
    assert [(b.observed_at, b.balance.credits_balance) for b in found] == [(T0, 205), (T0 + timedelta(hours=1), 9)]
    assert len(await ledger.balances(ACCOUNT, since=T0 + timedelta(minutes=1))) == 1
    assert (await ledger.status()).accounts[0].balance_snapshots == 2


async def test_an_export_gives_every_row_oldest_first_in_the_documented_columns(ledger: Ledger) -> None:
    rows = chain([-5, 250, -15])
    await ledger.record_usage(ACCOUNT, list(reversed(rows)), read_at(rows, 3))
    exported = [e.as_dict() async for e in ledger.export(ACCOUNT, since=rows[1].timestamp)]
    assert [tuple(e) for e in exported] == [EXPORT_FIELDS] * 2
    assert [(e["at"], e["credits_delta"], e["flags"]) for e in exported] == [
        (rows[1].at, 250, ""),
        (rows[2].at, -15, ""),
    ]


async def test_an_answer_proving_two_kept_apart_stretches_one_keeps_one_copy_of_each_row(
    make_ledger: MakeLedger,
) -> None:
    # Found by search: identical refunded deductions within one second keep the second answer apart; the last,
    # which reaches the account's first row, places both and joins them.
    ledger, second = make_ledger(feed_size=6), timedelta(seconds=1)
    refunded = [tx(-5, 1240, T0, kind="Deduction", description="d"), tx(5, 1245, T0, kind="Refund", description="r")]
    rows = [tx(-5, 995, T0), tx(250, 1245, T0), *refunded]
    rows += [tx(-5, 1240, T0 + second, kind="Deduction", description="d")]
    rows += [tx(-5, 1235, T0 + second, kind="Deduction", description="d")]
    placements = [
        (await ledger.record_usage(ACCOUNT, list(reversed(rows[max(0, end - 6) : end])), at)).placement
        for end, at in [(6, T0 + second), (3, T0), (1, T0), (4, T0 + second)]
    ]
    assert placements == ["first", "ambiguous", "joined", "joined"]
    page = await ledger.history(ACCOUNT, limit=50)
    assert txs(page.rows) == list(reversed(rows))
    assert [(a.rows, a.stretches) for a in (await ledger.status()).accounts] == [(6, 1)]
    # The copies' flags stay with the rows kept: what else they may have been about is not known.
    assert [sorted(r.flags) for r in reversed(page.rows)] == [["ambiguous"]] * 3 + [[]] * 3


async def test_the_row_read_at_the_last_observations_instant_is_counted_in_spend_and_daily_spend(
    ledger: Ledger,
) -> None:
    # The poller files an answer at its newest row's time: that row is the last observation's instant.
    rows = chain([-5, -15, -5, 100] * 10)
    await ledger.record_usage(ACCOUNT, window(rows, 40), rows[39].timestamp)
    page = await ledger.history(ACCOUNT, limit=500)
    report = await ledger.spend(ACCOUNT)
    counted = sum(t.transactions for t in report.total.by_type.values())
    assert counted == len(page.rows) == 40
    assert sum(t.credits for t in report.total.by_type.values()) == sum(tx.credits_delta for tx in rows)
    (day,) = await ledger.daily_net_spend(ACCOUNT)
    assert day.net_credits == -sum(tx.credits_delta for tx in rows if tx.type == "Deduction")


async def test_a_range_running_past_the_last_read_is_as_complete_as_its_part_up_to_it(ledger: Ledger) -> None:
    rows = chain([-5, -15, -5, 100] * 20)
    for end in (50, 80):
        await ledger.record_usage(ACCOUNT, window(rows, end), read_at(rows, end))
    after_oldest = rows[0].timestamp + timedelta(milliseconds=1)  # the oldest row kept is rows[0]
    tomorrow = rows[-1].timestamp + timedelta(days=1)
    for since in (rows[0].timestamp, after_oldest):
        page = await ledger.history(ACCOUNT, since, tomorrow, limit=500)
        report = await ledger.spend(ACCOUNT, since, tomorrow)
        assert page.history_complete == report.history_complete == (since == after_oldest)
        assert page.seams == report.seams
        assert sum(t.transactions for t in report.total.by_type.values()) == len(page.rows)
