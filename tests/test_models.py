from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dessert_mcp.models import (
    ArgumentSchema,
    Balance,
    BalanceReport,
    Forecast,
    Seam,
    Usage,
    UsageArguments,
    UsageReport,
    UsageSummary,
)
from tests.support.api import DOCS_BALANCE, DOCS_USAGE


def _balance(**changes: Any) -> Balance:
    data = copy.deepcopy(DOCS_BALANCE) | changes
    return Balance.model_validate_json(json.dumps(data))


def test_the_docs_example_balance_parses_with_exact_values() -> None:
    balance = _balance()
    assert balance.model_dump() == DOCS_BALANCE


def test_unknown_extra_fields_from_the_api_are_tolerated() -> None:
    balance = _balance(new_field={"x": 1})
    assert balance.credits_balance == 205


@pytest.mark.parametrize(
    "changes",
    [
        {"credits_balance": "205"},
        {"credits_balance": 205.5},
        {"auto_recharge_enabled": "true"},
        {"credits_balance": None},
        {"pricing": {"credit_usd": 0.1, "static_ad_credits": 0, "full_ad_credits": 15}},
    ],
)
def test_wrongly_typed_documented_fields_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _balance(**changes)


def test_a_missing_documented_field_is_rejected() -> None:
    data = copy.deepcopy(DOCS_BALANCE)
    del data["pricing"]
    with pytest.raises(ValidationError):
        Balance.model_validate_json(json.dumps(data))


def test_the_balance_report_adds_what_the_balance_pays_for() -> None:
    report = BalanceReport.from_balance(_balance())
    assert report.static_ads_affordable == 41  # 205 // 5
    assert report.full_ads_affordable == 13  # 205 // 15
    assert report.below_auto_recharge_threshold is False
    assert report.model_dump(include=set(DOCS_BALANCE)) == DOCS_BALANCE


def test_a_balance_under_the_threshold_is_flagged_and_a_negative_balance_affords_nothing() -> None:
    assert BalanceReport.from_balance(_balance(credits_balance=19)).below_auto_recharge_threshold is True
    assert BalanceReport.from_balance(_balance(credits_balance=20)).below_auto_recharge_threshold is False
    negative = BalanceReport.from_balance(_balance(credits_balance=-3))
    assert (negative.static_ads_affordable, negative.full_ads_affordable) == (0, 0)


def test_an_empty_balance_affords_no_ad_even_when_an_ad_costs_one_credit() -> None:
    pricing = {"credit_usd": 0.1, "static_ad_credits": 1, "full_ad_credits": 1}
    for credits in (0, -3):
        report = BalanceReport.from_balance(_balance(credits_balance=credits, pricing=pricing))
        assert (report.static_ads_affordable, report.full_ads_affordable) == (0, 0)


def _usage(data: dict[str, Any] = DOCS_USAGE) -> Usage:
    return Usage.model_validate_json(json.dumps(data))


def test_transactions_keep_the_exact_values_and_order_the_api_returned() -> None:
    report = UsageReport.build(_usage())
    assert [t.model_dump() for t in report.recent_transactions] == DOCS_USAGE["recent_transactions"]


def test_the_summary_totals_spend_additions_purchases_and_types() -> None:
    summary = UsageReport.build(_usage()).summary
    assert summary.credits_spent == 45
    assert summary.credits_added == 300
    assert summary.usd_purchased == 25.0
    assert summary.count_by_type.model_dump() == {"Deduction": 1, "Purchase": 1, "Bonus": 1, "Refund": 0}
    assert summary.oldest_at == "2026-05-12T15:08:22.000Z"
    assert summary.newest_at == "2026-05-19T18:24:01.000Z"


def test_limit_types_and_since_filter_locally() -> None:
    usage = _usage()
    assert len(UsageReport.build(usage, limit=1).recent_transactions) == 1
    only = UsageReport.build(usage, types=["Purchase", "Bonus"]).recent_transactions
    assert [t.type for t in only] == ["Purchase", "Bonus"]
    recent = UsageReport.build(usage, since=datetime(2026, 5, 19, 18, 23, 48, tzinfo=UTC)).recent_transactions
    assert [t.type for t in recent] == ["Deduction", "Purchase"]


def test_until_leaves_out_transactions_at_or_after_it_and_a_naive_until_is_utc() -> None:
    feed = _feed(3)  # 23:00, 22:00 and 21:00 on 2026-05-20
    for until in (datetime(2026, 5, 20, 23, tzinfo=UTC), datetime(2026, 5, 20, 23)):
        recent = UsageReport.build(feed, until=until).recent_transactions
        assert [t.at for t in recent] == ["2026-05-20T22:00:00Z", "2026-05-20T21:00:00Z"]


def test_a_timestamp_with_an_offset_keeps_its_instant_and_one_without_is_utc() -> None:
    row = DOCS_USAGE["recent_transactions"][0]
    with_offset = _usage({"recent_transactions": [row | {"at": "2026-05-01T10:00:00+02:00"}]})
    without = _usage({"recent_transactions": [row | {"at": "2026-05-01T10:00:00"}]})
    assert with_offset.recent_transactions[0].timestamp == datetime(2026, 5, 1, 8, tzinfo=UTC)
    assert without.recent_transactions[0].timestamp.tzinfo is UTC
    assert without.recent_transactions[0].timestamp == datetime(2026, 5, 1, 10, tzinfo=UTC)


def test_a_naive_since_is_taken_as_utc() -> None:
    recent = UsageReport.build(_usage(), since=datetime(2026, 5, 19, 18, 24, 0)).recent_transactions
    assert [t.type for t in recent] == ["Deduction"]


def test_an_empty_result_has_an_empty_summary() -> None:
    report = UsageReport.build(_usage(), types=["Refund"])
    assert report.recent_transactions == []
    assert report.summary.credits_spent == 0
    assert report.summary.oldest_at is None


def _feed(n: int) -> Usage:
    rows = [
        {
            "type": "Deduction",
            "credits_delta": -5,
            "balance_after": 1000 - 5 * i,
            "usd_amount": None,
            "description": "API ad generation (count=1, format=static)",
            "at": f"2026-05-{20 - i // 24:02d}T{23 - i % 24:02d}:00:00Z",
        }
        for i in range(n)
    ]
    return _usage({"recent_transactions": rows})


def test_the_report_says_plainly_that_only_the_last_50_are_available() -> None:
    report = UsageReport.build(_feed(50), limit=10)
    assert "last 50 transactions" in report.note
    assert report.history_complete is False
    assert UsageReport.build(_feed(12)).history_complete is True


def test_a_full_feed_is_complete_for_a_since_inside_its_window() -> None:
    feed = _feed(50)
    assert UsageReport.build(feed, since=datetime(2026, 5, 19, 12, tzinfo=UTC)).history_complete is True
    assert UsageReport.build(feed, since=datetime(2026, 5, 1, tzinfo=UTC)).history_complete is False


def test_a_full_feed_is_complete_only_when_its_oldest_entry_is_strictly_older_than_since() -> None:
    feed = _feed(50)  # hourly, the oldest two at 22:00 and 23:00 on 2026-05-18
    assert UsageReport.build(feed, since=datetime(2026, 5, 18, 22, 30, tzinfo=UTC)).history_complete is True
    # One more transaction in the same second as the oldest may have fallen out of the API's window.
    assert UsageReport.build(feed, since=datetime(2026, 5, 18, 22, tzinfo=UTC)).history_complete is False


def test_an_incomplete_feed_has_one_gap_seam_before_its_oldest_entry_and_a_complete_one_none() -> None:
    assert UsageReport.build(_feed(50)).seams == [Seam(kind="gap", after=None, before="2026-05-18T22:00:00Z")]
    assert UsageReport.build(_feed(12)).seams == []


def test_a_page_report_carries_its_next_cursor() -> None:
    report = UsageReport.of([], complete=False, seams=[], next_cursor="page-2", note="n")
    assert report.next_cursor == "page-2"


def test_the_summary_counts_and_totals_every_transaction_of_a_type() -> None:
    usage = Usage.model_validate(
        {
            "recent_transactions": [
                {"type": t, "credits_delta": d, "balance_after": 0, "usd_amount": u, "description": "x", "at": at}
                for t, d, u, at in [
                    ("Purchase", 100, 0.1, "2026-05-03T00:00:00Z"),
                    ("Purchase", 200, 0.2, "2026-05-02T00:00:00Z"),
                    ("Deduction", -5, None, "2026-05-01T00:00:00Z"),
                    ("Deduction", -7, None, "2026-04-30T00:00:00Z"),
                ]
            ]
        }
    )
    summary = UsageReport.build(usage).summary
    assert summary.count_by_type.model_dump() == {"Deduction": 2, "Purchase": 2, "Bonus": 0, "Refund": 0}
    assert (summary.credits_spent, summary.credits_added) == (12, 300)
    assert summary.usd_purchased == 0.3  # in exact cents: 0.1 + 0.2 as floats is 0.30000000000000004


@pytest.mark.parametrize(
    "changes",
    [{"type": "Adjustment"}, {"at": "yesterday"}, {"credits_delta": "5"}, {"description": None}],
)
def test_malformed_transactions_are_rejected(changes: dict[str, Any]) -> None:
    row = DOCS_USAGE["recent_transactions"][0] | changes
    with pytest.raises(ValidationError):
        _usage({"recent_transactions": [row]})


def test_usd_amount_may_be_omitted() -> None:
    row = {k: v for k, v in DOCS_USAGE["recent_transactions"][0].items() if k != "usd_amount"}
    assert _usage({"recent_transactions": [row]}).recent_transactions[0].usd_amount is None


def _ledger(*rows: tuple[str, int, int, str]) -> Usage:
    return Usage.model_validate(
        {
            "recent_transactions": [
                {"type": t, "credits_delta": d, "balance_after": b, "usd_amount": None, "description": "x", "at": at}
                for t, d, b, at in rows
            ]
        }
    )


def test_the_forecast_over_the_docs_feed_is_exact() -> None:
    summary = UsageReport.build(Usage.model_validate(DOCS_USAGE)).summary
    # 45 credits deducted between 2026-05-12T15:08:22Z and 2026-05-19T18:24:01Z: 616,539 s.
    rate = 45 * 86400 / 616539
    assert summary.forecast.burn_rate_credits_per_day == round(rate, 3) == 6.306
    assert summary.forecast.latest_balance == 205
    assert summary.forecast.days_until_empty == round(205 / rate, 2) == 32.51
    assert summary.forecast.unavailable_reason is None


def test_refunds_offset_deductions_and_purchases_do_not_count_in_the_burn_rate() -> None:
    usage = _ledger(
        ("Deduction", -100, 400, "2026-05-03T00:00:00Z"),
        ("Refund", 20, 420, "2026-05-02T12:00:00Z"),
        ("Purchase", 500, 500, "2026-05-02T00:00:00Z"),
        ("Deduction", -20, 0, "2026-05-01T00:00:00Z"),
    )
    forecast = UsageReport.build(usage).summary.forecast
    assert forecast.burn_rate_credits_per_day == 50.0  # (100 + 20 - 20) credits over 2 days
    assert forecast.latest_balance == 400
    assert forecast.days_until_empty == 8.0


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([], "fewer than two transactions"),
        ([("Deduction", -5, 10, "2026-05-01T00:00:00Z")], "fewer than two transactions"),
        (
            [("Deduction", -5, 5, "2026-05-01T00:30:00Z"), ("Deduction", -5, 10, "2026-05-01T00:00:00Z")],
            "the transactions span less than an hour",
        ),
        (
            [("Bonus", 50, 60, "2026-05-02T00:00:00Z"), ("Purchase", 10, 10, "2026-05-01T00:00:00Z")],
            "no net deductions in the window",
        ),
        (
            [("Refund", 10, 20, "2026-05-02T00:00:00Z"), ("Deduction", -10, 10, "2026-05-01T00:00:00Z")],
            "no net deductions in the window",
        ),
    ],
)
def test_the_forecast_is_null_with_a_reason_when_the_window_cannot_support_it(
    rows: list[tuple[str, int, int, str]], reason: str
) -> None:
    forecast = UsageReport.build(_ledger(*rows)).summary.forecast
    assert forecast.burn_rate_credits_per_day is None
    assert forecast.days_until_empty is None
    assert forecast.unavailable_reason == reason
    assert forecast.latest_balance == (rows[0][2] if rows else None)


def test_an_hour_of_history_and_one_net_credit_are_enough_to_forecast() -> None:
    forecast = UsageReport.build(
        _ledger(("Deduction", -1, 24, "2026-05-01T01:00:00Z"), ("Bonus", 10, 25, "2026-05-01T00:00:00Z"))
    ).summary.forecast
    assert forecast.unavailable_reason is None
    assert forecast.burn_rate_credits_per_day == 24.0
    assert forecast.days_until_empty == 1.0


@pytest.mark.parametrize("balance", [0, -30])
def test_an_empty_or_negative_balance_runs_out_now(balance: int) -> None:
    forecast = UsageReport.build(
        _ledger(("Deduction", -10, balance, "2026-05-02T00:00:00Z"), ("Deduction", -10, 10, "2026-05-01T00:00:00Z"))
    ).summary.forecast
    assert (forecast.latest_balance, forecast.days_until_empty) == (balance, 0.0)


def _forecast(latest: int | None) -> Forecast:
    return Forecast(
        burn_rate_credits_per_day=None, latest_balance=latest, days_until_empty=None, unavailable_reason="why"
    )


def test_daily_history_gives_the_mean_rate_and_a_range_from_the_quartiles() -> None:
    forecast = _forecast(1000).with_daily([40, 10, 30, 20])
    assert forecast == Forecast(
        burn_rate_credits_per_day=25.0,
        latest_balance=1000,
        days_until_empty=40.0,
        unavailable_reason=None,
        days_until_empty_low=30.77,  # 1000 / 32.5, the upper quartile
        days_until_empty_high=57.14,  # 1000 / 17.5, the lower quartile
        history_days=4,
    )


def test_a_quartile_pace_that_spends_nothing_leaves_its_end_of_the_range_null() -> None:
    quiet = _forecast(100).with_daily([0, 0, 0, 40])  # quartiles 0 and 10
    assert (quiet.days_until_empty, quiet.days_until_empty_low, quiet.days_until_empty_high) == (10.0, 10.0, None)
    quietest = _forecast(100).with_daily([0, 0, 0, 0, 100])  # both quartiles 0
    assert (quietest.days_until_empty, quietest.days_until_empty_low, quietest.days_until_empty_high) == (
        5.0,
        None,
        None,
    )


def test_daily_history_gives_the_rate_to_three_places_and_days_to_two_and_one_credit_is_enough() -> None:
    one = _forecast(100).with_daily([0, 1])  # quartiles 0.25 and 0.75
    assert (one.burn_rate_credits_per_day, one.days_until_empty) == (0.5, 200.0)
    assert (one.days_until_empty_low, one.days_until_empty_high) == (133.33, 400.0)
    assert _forecast(100).with_daily([0, 1, 1]).burn_rate_credits_per_day == 0.667
    assert _forecast(100).with_daily([0, 3, 4]).days_until_empty == 42.86


@pytest.mark.parametrize("latest", [None, 0, -50])
def test_daily_history_over_no_or_a_spent_balance_runs_out_now(latest: int | None) -> None:
    forecast = _forecast(latest).with_daily([10, 20])
    assert (forecast.latest_balance, forecast.days_until_empty) == (latest, 0.0)
    assert (forecast.days_until_empty_low, forecast.days_until_empty_high) == (0.0, 0.0)


@pytest.mark.parametrize("daily", [[], [30], [0, 0], [20, -20], [-5, -10]])
def test_under_two_days_or_no_net_spend_in_history_keeps_the_forecast_from_the_feed(daily: list[int]) -> None:
    forecast = _forecast(100)
    assert forecast.with_daily(daily) is forecast


def test_result_schemas_leave_out_the_titles_pydantic_adds_even_beside_nested_models() -> None:
    schema = UsageSummary.model_json_schema()  # its forecast and count_by_type are references, without titles
    for model in (schema, *schema["$defs"].values()):
        assert "title" not in model
        assert model["properties"]
        assert all("title" not in prop for prop in model["properties"].values())


def test_published_arguments_drop_the_null_arm_of_optionals_and_the_type_of_enums() -> None:
    properties = UsageArguments.model_json_schema(schema_generator=ArgumentSchema)["properties"]
    assert "anyOf" not in properties["limit"]
    assert (properties["limit"]["type"], properties["limit"]["maximum"]) == ("integer", 50)
    assert properties["types"]["items"] == {"enum": ["Deduction", "Purchase", "Bonus", "Refund"]}
