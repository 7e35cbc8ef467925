"""The demo's formatting, in process: what a person reads for values the sandbox never produces."""

from __future__ import annotations

import functools
import io
import json
from typing import Any

import pytest

from dessert_mcp.cli import demo
from dessert_mcp.cli.demo import WIDTH, spend_text, summary_lines, table, usd, when


def summary(**forecast: Any) -> dict[str, Any]:
    return {
        "credits_spent": 0,
        "credits_added": 0,
        "usd_purchased": 0.0,
        "count_by_type": {"Deduction": 0, "Purchase": 0, "Bonus": 0, "Refund": 0},
        "oldest_at": None,
        "newest_at": None,
        "forecast": forecast,
    }


def test_an_empty_window_says_so_and_why_there_is_no_forecast() -> None:
    lines = summary_lines(
        summary(
            burn_rate_credits_per_day=None,
            latest_balance=None,
            days_until_empty=None,
            unavailable_reason="fewer than two transactions",
        ),
        returned=0,
    )
    assert lines == [
        "summary:  no transactions; 0 credits spent, 0 added, $0.00 purchased",
        "forecast: no estimate (fewer than two transactions)",
    ]


def test_a_forecast_from_kept_history_says_so_and_gives_its_range() -> None:
    lines = summary_lines(
        summary(
            burn_rate_credits_per_day=40.0,
            latest_balance=400,
            days_until_empty=10.0,
            unavailable_reason=None,
            days_until_empty_low=6.5,
            days_until_empty_high=16.0,
            history_days=12,
        ),
        returned=50,
    )
    expected = (
        "forecast: over 12 whole days of kept history, 40.0 credits a day (net); the balance of 400 lasts about "
        "10.0 days (6.5 to 16.0 days at the busier and quieter days' pace), before auto-recharge"
    )
    assert " ".join(line.strip() for line in lines[1:]) == expected


def totals(transactions: int, credits: int) -> dict[str, int]:
    return {"transactions": transactions, "credits": credits}


def test_a_spend_answer_reads_as_one_sentence_of_spend_by_format_and_recharges() -> None:
    spend = {
        "total": {
            "by_type": {
                "Deduction": totals(114, -4835),
                "Purchase": totals(19, 4750),
                "Bonus": totals(0, 0),
                "Refund": totals(9, 65),
            },
            "by_format": {"full": totals(61, -3540), "static": totals(62, -1140), "unparsed": totals(0, 0)},
        },
        "history_complete": True,
    }
    assert spend_text(spend) == (
        "142 transactions; 3,540 credits spent on full ads and 1,140 on static (net of refunds), 4,750 added by "
        "19 purchases; history complete: yes"
    )
    spend["total"]["by_format"]["unparsed"] = totals(1, -5)  # a description that names no format: counted apart
    spend["history_complete"] = False
    assert ", 5 on others, " in spend_text(spend)
    assert spend_text(spend).endswith("history complete: no")


def test_money_always_has_cents_and_thousands_separators() -> None:
    assert usd(25.0) == "$25.00"
    assert usd(1234.5) == "$1,234.50"
    assert usd(None) is None


def test_timestamps_read_as_utc_minutes_whatever_their_offset() -> None:
    assert when("2026-05-19T18:24:01.000Z") == "2026-05-19 18:24"
    assert when("2026-05-19T20:24:01+02:00") == "2026-05-19 18:24"
    assert when("not a time") == "not a time"


def test_a_long_last_column_is_cut_to_the_width_with_an_ellipsis() -> None:
    text = table(["a", "description"], [["x", "y" * 200], ["z", "short"]])
    lines = text.splitlines()
    assert max(len(line) for line in lines) == WIDTH
    assert lines[2].endswith("…")
    assert lines[3] == "z  short"


def test_numbers_align_right_and_missing_values_show_a_dash() -> None:
    assert table(["n", "usd"], [[5, None], [250, "$25.00"]], right={0, 1}).splitlines()[2:] == [
        "  5       —",
        "250  $25.00",
    ]


async def test_a_failing_call_is_reported_by_its_own_sentence_not_a_task_group_summary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every server the demo launches gets the wrong key, so its first call fails inside `async with Client(...)`.
    serve_with_wrong_key = functools.partial(demo._server, key=demo.WRONG_KEY)
    monkeypatch.setattr(demo, "_server", lambda sandbox, key, **kept: serve_with_wrong_key(sandbox, **kept))

    status = await demo.run_demo(io.StringIO())

    errors = capsys.readouterr().err.splitlines()
    assert status == 1
    assert errors[0].startswith("demo: dessert_get_balance failed: Dessert rejected the API key (HTTP 401")
    assert json.loads(errors[1])["code"] == "auth_invalid"  # the tool error's second line, as an agent gets it
    assert len(errors) == 2
