"""The merge's promises, for any chain and any windows of it: nothing invented, nothing lost, continuity reproduced
where windows share rows, and no range called complete that hides a row no window held.

The default profile runs a few seconds; `pytest tests/ledger --hypothesis-profile=ledger` runs the deep search.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.ledger.merge import RowKey, row_key
from dessert_mcp.ledger.queries import in_range
from dessert_mcp.models import USAGE_FEED_SIZE, Transaction, TransactionType
from tests.ledger.conftest import open_database_ledger
from tests.support.ledger import T0, tx

ACCOUNT = "key:property"
MAX_ROWS = 300
HALF_SECOND = timedelta(milliseconds=500)
DESCRIPTIONS = {
    -5: "API ad generation (count=1, format=static)",
    -15: "API ad generation (count=1, format=full)",
    -45: "API ad generation (count=3, format=full)",
}


_DELTAS = (-5, -15, -45, 0, 250)
_STEPS_S = (0, 0, 1, 60)


@st.composite
def chains(draw: st.DrawFn, min_steps: int = 1) -> list[Transaction]:
    """A chain oldest first: single transactions, and bursts of a deduction and its refund repeated within one
    second (identical rows, zero-sum runs); time moves on by 0 s, 1 s or a minute between steps.

    Steps are drawn as bytes (two a step), which Hypothesis generates and shrinks far faster than tuples."""
    raw = draw(st.binary(min_size=2 * min_steps, max_size=MAX_ROWS))
    rows: list[Transaction] = []
    balance, at = 1000, T0
    for what, when in zip(raw[::2], raw[1::2], strict=False):
        at += timedelta(seconds=_STEPS_S[when % len(_STEPS_S)])
        if what % 2:
            delta = _DELTAS[(what // 2) % len(_DELTAS)]
            kind: TransactionType = "Deduction" if delta < 0 else "Bonus" if delta == 0 else "Purchase"
            balance += delta
            rows.append(tx(delta, balance, at, kind=kind, description=DESCRIPTIONS.get(delta, kind)))
        else:
            cost = -5 if what % 4 else -15
            for _ in range(1 + (what // 4) % 4):
                rows.append(tx(cost, balance + cost, at, kind="Deduction", description=DESCRIPTIONS[cost]))
                rows.append(tx(-cost, balance, at, kind="Refund", description="Refund"))
    return rows[:MAX_ROWS] or [tx(0, balance, at, kind="Bonus", description="Bonus")]


@dataclass(frozen=True)
class Read:
    end: int  # the answer held chain[end - size : end]
    at: datetime


@st.composite
def reads(draw: st.DrawFn, rows: Sequence[Transaction], *, empty: bool = False) -> list[Read]:
    """Up to 8 answers, each the last rows at some moment (`empty`: or before the first), in any order, read at a
    moment consistent with it."""
    found = []
    for end in draw(st.lists(st.integers(0 if empty else 1, len(rows)), min_size=1, max_size=8)):
        newest = rows[end - 1].timestamp if end else T0 - timedelta(days=1)
        nxt = rows[end].timestamp if end < len(rows) else newest + timedelta(minutes=5)
        found.append(Read(end, newest + (nxt - newest) * draw(st.sampled_from([0, 0.5, 1]))))
    return found


def contains(haystack: Sequence[RowKey], needle: Sequence[RowKey]) -> bool:
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


async def stretches_of(ledger: InMemoryLedger) -> list[list[tuple[RowKey, frozenset[str]]]]:
    acct = ledger._accounts.get(ACCOUNT)
    if acct is None:
        return []
    return [[(row_key(t), frozenset(f)) for t, f in s.rows] for s in acct.stretches.values()]


async def check(rows: list[Transaction], answers: list[Read], feed: int, ranges: list[tuple[int, int]]) -> None:
    ledger = InMemoryLedger(feed_size=feed)
    windows = []
    for read in answers:
        win = rows[max(0, read.end - feed) : read.end]
        windows.append((max(0, read.end - feed), read.end))
        outcome = await ledger.record_usage(ACCOUNT, list(reversed(win)), read.at)
        event(outcome.placement)
    keys = [row_key(t) for t in rows]
    stretches = await stretches_of(ledger)
    stretch_keys = [[k for k, _ in s] for s in stretches]

    # Nothing invented: every stretch is a run of the chain as it happened.
    for s in stretch_keys:
        assert contains(keys, s)
    # Nothing lost: every answer lies whole within one stretch, and no row any answer held is missing.
    for lo, hi in windows:
        assert hi == lo or any(contains(s, keys[lo:hi]) for s in stretch_keys)
    held = Counter(keys[i] for i in {i for lo, hi in windows for i in range(lo, hi)})
    assert not held - Counter(k for s in stretch_keys for k in s)
    # Copies only where the ledger says it could not tell: unflagged rows never outnumber the rows answers held.
    unflagged = Counter(k for s in stretches for k, f in s if "ambiguous" not in f)
    assert not unflagged - held
    # Continuity: two answers that share rows are one run of the chain, unless identical rows left it open.
    for a_lo, a_hi in windows:
        for b_lo, b_hi in windows:
            lo, hi = max(a_lo, b_lo), min(a_hi, b_hi)
            if lo < hi:
                union = keys[min(a_lo, b_lo) : max(a_hi, b_hi)]
                shared = set(keys[lo:hi])
                said_so = any("ambiguous" in f for s in stretches for k, f in s if k in shared)
                assert said_so or any(contains(s, union) for s in stretch_keys)
    # Complete only where nothing is missing: the ledger's rows over the range are the chain's. Every range between
    # the chain's instants (and half a second after them) a few instants long; a few through the public API too.
    acct = ledger._accounts.get(ACCOUNT)
    if acct is None:
        return
    coverage = acct.coverage()
    stored = sorted(((t.timestamp, row_key(t)) for s in acct.stretches.values() for t, _ in s.rows))
    times = sorted({t.timestamp for t in rows})
    bounds: list[datetime | None] = [None, *sorted({*times, *(t + HALF_SECOND for t in times)}), None]
    for a, since in enumerate(bounds[:-1]):
        for span in (1, 2, 3, 5, 10, len(bounds)):
            until = bounds[min(a + span, len(bounds) - 1)]
            if coverage.complete(since, until):
                end = coverage.vouched_end(until)  # a range beyond the last read is complete up to it
                assert end is not None
                assert Counter(k for at, k in stored if in_range(at, since, end)) == Counter(
                    row_key(t) for t in rows if in_range(t.timestamp, since, end)
                )
    for since_i, until_i in ranges:
        since = rows[since_i % len(rows)].timestamp + timedelta(seconds=since_i % 3 - 1)
        until = since + timedelta(seconds=until_i)
        page = await ledger.history(ACCOUNT, since, until, limit=500)
        if page.history_complete:
            end = min(until, coverage.as_of) if coverage.as_of is not None else until
            expected = [t for t in rows if since <= t.timestamp < end]
            assert [r.transaction for r in page.rows if r.transaction.timestamp < end] == list(reversed(expected))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_merging_fifty_row_answers_keeps_the_chain_exactly_and_claims_nothing_it_cannot_prove(
    data: st.DataObject,
) -> None:
    rows = data.draw(chains(min_steps=40))
    answers = data.draw(reads(rows))
    ranges = data.draw(st.lists(st.tuples(st.integers(0, MAX_ROWS), st.integers(0, 4000)), max_size=4))
    await check(rows, answers, USAGE_FEED_SIZE, ranges)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_merging_short_answers_of_dense_identical_rows_keeps_the_same_promises(data: st.DataObject) -> None:
    rows = data.draw(chains())[:60]
    feed = data.draw(st.integers(1, 8))
    answers = data.draw(reads(rows, empty=True))
    ranges = data.draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 600)), max_size=4))
    await check(rows, answers, feed, ranges)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_the_database_ledger_applies_every_merge_as_the_in_memory_one_does(data: st.DataObject) -> None:
    # Joins, dropped copies, flag updates and kept-apart answers written as SQL: one SQLite file per example.
    rows = data.draw(chains())[:60]
    feed = data.draw(st.integers(1, 8))
    answers = data.draw(reads(rows, empty=True))
    reference = InMemoryLedger(feed_size=feed)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = open_database_ledger(f"sqlite:///{tmp}/ledger.db", feed_size=feed)
        try:
            for read in answers:
                answer = list(reversed(rows[max(0, read.end - feed) : read.end]))
                expected = await reference.record_usage(ACCOUNT, answer, read.at)
                assert await ledger.record_usage(ACCOUNT, answer, read.at) == expected
            assert await ledger.history(ACCOUNT, limit=500) == await reference.history(ACCOUNT, limit=500)
            assert (await ledger.status()).accounts == (await reference.status()).accounts
        finally:
            await ledger.aclose()
