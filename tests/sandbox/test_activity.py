"""The live sandbox account: a moving window over a long, consistent, seeded history."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

import httpx2
import pytest

from dessert_mcp.models import USAGE_FEED_SIZE
from dessert_mcp.sandbox import SANDBOX_KEY
from dessert_mcp.sandbox.account import AUTO_RECHARGE_CREDITS, AUTO_RECHARGE_THRESHOLD, PRICES
from dessert_mcp.sandbox.activity import HISTORY_ROWS, MAX_ROWS, LiveAccount, iso, parse_rate
from tests.support.auth import Clock
from tests.support.faults import ThreadedFaultySandbox

DESCRIPTION = re.compile(r"(?:API ad generation|Refund: render failed) \(count=(\d+), format=(full|static)\)")


def assert_chained(rows: list[dict[str, Any]]) -> None:
    """Oldest first: each row's balance_after is the one before it plus its own credits_delta."""
    for older, newer in pairwise(rows):
        assert older["balance_after"] + newer["credits_delta"] == newer["balance_after"], (older, newer)


def test_a_live_account_starts_with_hundreds_of_rows_of_which_usage_serves_the_last_50_newest_first() -> None:
    clock = Clock()
    account = LiveAccount(rate=2.0, seed=7, clock=clock)
    assert len(account.ledger) == HISTORY_ROWS + 1  # and the welcome bonus
    served = account.usage()["recent_transactions"]
    assert served == list(reversed(account.ledger[-USAGE_FEED_SIZE:]))
    assert served[0]["at"] == iso(clock.now)  # the history ends now


def test_the_same_seed_and_clock_give_the_same_history_and_another_seed_another() -> None:
    clock = Clock()
    first, second = LiveAccount(rate=1.0, seed=3, clock=clock), LiveAccount(rate=1.0, seed=3, clock=clock)
    clock.advance(600)
    assert first.usage() == second.usage()
    assert LiveAccount(rate=1.0, seed=4, clock=clock).usage() != first.usage()


def test_how_often_the_account_is_read_changes_nothing_in_its_history() -> None:
    clock = Clock()
    often, once = LiveAccount(rate=0.5, seed=11, clock=clock), LiveAccount(rate=0.5, seed=11, clock=clock)
    for _ in range(120):
        clock.advance(5)
        often.usage()
    assert once.usage() == often.usage()
    assert once.ledger == often.ledger


def test_the_window_moves_as_the_clock_does_and_the_history_chains_exactly() -> None:
    clock = Clock()
    account = LiveAccount(rate=1.0, seed=5, clock=clock)
    before = account.usage()["recent_transactions"]
    clock.advance(3600)
    after = account.usage()["recent_transactions"]
    assert len(after) == USAGE_FEED_SIZE
    assert before[0] not in after  # a whole window and more scrolled out: the ledger has to keep it
    assert len(account.ledger) > HISTORY_ROWS + 3000
    assert_chained(account.ledger)
    assert_chained(list(reversed(after)))
    assert account.balance()["credits_balance"] == after[0]["balance_after"]


def test_nothing_happens_between_reads_when_the_clock_stands_still() -> None:
    clock = Clock()
    account = LiveAccount(rate=50.0, seed=1, clock=clock)
    assert account.usage() == account.usage()
    assert account.catch_up() == 0


@pytest.mark.parametrize("seed", range(5))
def test_deductions_refunds_and_auto_recharge_read_as_the_real_api_writes_them(seed: int) -> None:
    clock = Clock()
    account = LiveAccount(rate=1.0, seed=seed, clock=clock)
    clock.advance(7200)
    balance = account.balance()
    rows = account.ledger
    kinds = {row["type"] for row in rows}
    assert kinds == {"Bonus", "Deduction", "Refund", "Purchase"}
    for older, row in pairwise(rows):
        assert row["balance_after"] >= 0
        if row["type"] in ("Deduction", "Refund"):
            match = DESCRIPTION.fullmatch(row["description"])
            assert match is not None, row
            cost = int(match[1]) * PRICES[match[2]]
            assert row["credits_delta"] == (-cost if row["type"] == "Deduction" else cost)
            assert row["usd_amount"] is None
        if row["type"] == "Purchase":
            assert row == row | {
                "credits_delta": AUTO_RECHARGE_CREDITS,
                "usd_amount": 25.0,
                "description": "Auto-recharge",
            }
            assert older["type"] == "Deduction"
            assert older["balance_after"] < AUTO_RECHARGE_THRESHOLD
        elif older["type"] == "Deduction":
            assert older["balance_after"] >= AUTO_RECHARGE_THRESHOLD  # below it, the recharge follows at once
        assert older["at"] <= row["at"]
    assert {DESCRIPTION.fullmatch(r["description"])[2] for r in rows if r["type"] == "Deduction"} == {"full", "static"}  # type: ignore[index]
    assert balance["credits_balance"] == rows[-1]["balance_after"]
    assert balance["credits_lifetime_purchased"] == sum(r["credits_delta"] for r in rows if r["type"] == "Purchase")


def test_a_sandbox_left_running_keeps_a_bounded_history_and_a_true_lifetime_total() -> None:
    clock = Clock()
    account = LiveAccount(rate=10.0, seed=2, clock=clock, history_rows=0)
    clock.advance(2 * MAX_ROWS / 10.0)
    purchased = account.balance()["credits_lifetime_purchased"]
    assert len(account.ledger) == MAX_ROWS
    assert purchased > sum(r["credits_delta"] for r in account.ledger if r["type"] == "Purchase")
    assert_chained(account.ledger)


@pytest.mark.parametrize(
    ("text", "per_second"), [("2", 2.0), ("0.5", 0.5), ("30/min", 0.5), ("360/h", 0.1), (" 1 / s ", 1.0), ("1e1", 10.0)]
)
def test_a_rate_is_read_per_second_minute_or_hour(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "0", "-1", "fast", "2/day", "1000", "nan", "inf"])
def test_a_rate_that_is_not_one_is_refused_with_a_sentence_that_says_what_is(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--activity takes a rate above 0 .* got .*\.$"):
        parse_rate(text)


def test_the_sandbox_serves_a_live_account_over_http_and_its_reset_starts_it_again() -> None:
    clock = Clock()
    live = ThreadedFaultySandbox(account=lambda: LiveAccount(rate=1.0, seed=9, clock=clock))
    with (
        live as sandbox,
        httpx2.Client(base_url=sandbox.url, headers={"Authorization": f"Bearer {SANDBOX_KEY}"}) as http,
    ):
        first = http.get("/v1/usage").json()["recent_transactions"]
        clock.advance(120)
        usage = http.get("/v1/usage").json()["recent_transactions"]
        balance = http.get("/v1/balance").json()
        assert usage != first
        assert balance["credits_balance"] == usage[0]["balance_after"]
        sandbox.reset()
        fresh = LiveAccount(rate=1.0, seed=9, clock=clock).usage()["recent_transactions"]
        assert http.get("/v1/usage").json()["recent_transactions"] == fresh
