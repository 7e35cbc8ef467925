"""Pydantic models: the Dessert API's documented shapes, and the tools' results built on them.

Field descriptions come from the Dessert docs; they are what a model reads in the tools' output schemas.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

BALANCE_PATH: Final = "/v1/balance"
USAGE_PATH: Final = "/v1/usage"
TransactionType = Literal["Deduction", "Purchase", "Bonus", "Refund"]
TRANSACTION_TYPES: Final[tuple[TransactionType, ...]] = get_args(TransactionType)
# What may hide transactions between two stretches of kept history (dessert_mcp.ledger.SeamKind says what each means).
SeamKind = Literal["gap", "unverified", "ambiguous", "conflict"]
# The spans dessert.get_spend totals over.
Period = Literal["day", "week", "month"]
PERIODS: Final[tuple[Period, ...]] = get_args(Period)
# An ad format, from a transaction's description ("... format=full)"); anything else is counted apart.
AdFormat = Literal["full", "static", "unparsed"]
AD_FORMATS: Final[tuple[AdFormat, ...]] = get_args(AdFormat)
USAGE_FEED_SIZE: Final = 50
# JSON numbers past this lose precision in JavaScript clients; no credit or USD amount comes near it.
LARGEST_NUMBER: Final = 2**53 - 1
# Control characters, zero-width and bidi controls: they can hide or reorder text shown to a model or a person.
_UNSAFE_CHARS: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
# A forecast needs at least this much history to say anything.
_MIN_FORECAST_SPAN_S: Final = 3600.0
_SECONDS_PER_DAY: Final = 86400.0

# Validation context key: a callable applied to upstream free text after it is cleaned (the client's redactor).
REDACT: Final = "redact"


def clean_text(text: str) -> str:
    """Upstream text without the characters that could hide or reorder it when shown."""
    return _UNSAFE_CHARS.sub("", text)


def compact_schema(schema: dict[str, Any]) -> None:
    """Drop the titles pydantic adds: they repeat class and property names, and tools/list costs tokens."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)


class _Schema(BaseModel):
    model_config = ConfigDict(json_schema_extra=compact_schema)


class _APIModel(_Schema):
    # strict: a number sent as a string is a contract break, not something to guess about.
    # extra="ignore": the API may grow new fields without breaking us.
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _sane_number(cls, value: Any) -> Any:
        # Thousands of digits pass JSON and pydantic alike; sums of 1e308 overflow. Neither is a credit balance.
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > LARGEST_NUMBER:
            raise ValueError(f"number out of range (|x| > 2^53 - 1): {str(value)[:20]}")
        return value


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 to an aware datetime; a timestamp without an offset is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class Pricing(_APIModel):
    """The current per-ad credit cost."""

    credit_usd: float = Field(ge=0, description="USD value of one credit.")
    static_ad_credits: int = Field(ge=1, description="Credits one static ad costs.")
    full_ad_credits: int = Field(ge=1, description="Credits one full ad costs.")


class Balance(_APIModel):
    """GET /v1/balance: the account's credit balance and pricing constants."""

    credits_balance: int = Field(description="Current credit balance.")
    credits_balance_usd_equivalent: float = Field(description="Balance restated in USD.")
    credits_lifetime_purchased: int = Field(description="All-time credits purchased on this account.")
    auto_recharge_enabled: bool = Field(description="Whether auto-recharge will kick in when balance drops.")
    auto_recharge_threshold: int = Field(description="Balance below which auto-recharge fires.")
    auto_recharge_amount_usd: float = Field(description="USD amount charged when auto-recharge fires.")
    pricing: Pricing


class Transaction(_APIModel):
    """One credit transaction, exactly as the API returned it."""

    type: TransactionType
    credits_delta: int = Field(description="Signed credit change (negative for deductions).")
    balance_after: int = Field(description="Balance immediately after the transaction.")
    usd_amount: float | None = Field(default=None, description="USD amount, when real money was involved.")
    description: str = Field(description="Human-readable note.")
    at: str = Field(description="ISO 8601 timestamp.")

    @field_validator("description")
    @classmethod
    def _printable(cls, value: str, info: ValidationInfo) -> str:
        # Upstream free text reaches the model: keep the words, drop what could hide or reorder them, then
        # redact what the cleaned text spells out (a key hidden by zero-width characters or JSON escapes).
        cleaned = clean_text(value)
        redact: Callable[[str], str] | None = (info.context or {}).get(REDACT)
        return redact(cleaned) if redact is not None else cleaned

    @field_validator("at")
    @classmethod
    def _iso_8601(cls, value: str) -> str:
        parse_timestamp(value)  # raises ValueError, which pydantic reports as a validation error
        return value

    @cached_property
    def timestamp(self) -> datetime:
        return parse_timestamp(self.at)


class Usage(_APIModel):
    """GET /v1/usage: the last 50 credit transactions, most recent first."""

    recent_transactions: list[Transaction]


class BalanceReport(Balance):
    """The balance as the API returned it, plus what it pays for right now."""

    static_ads_affordable: int = Field(description="Static ads the current balance pays for.")
    full_ads_affordable: int = Field(description="Full ads the current balance pays for.")
    below_auto_recharge_threshold: bool = Field(description="credits_balance < auto_recharge_threshold.")
    alerts: list[str] = Field(default=[], description="Active alerts (dessert://alerts has them all).")

    @classmethod
    def from_balance(cls, balance: Balance) -> BalanceReport:
        credits = max(balance.credits_balance, 0)
        return cls(
            **balance.model_dump(),
            static_ads_affordable=credits // balance.pricing.static_ad_credits,
            full_ads_affordable=credits // balance.pricing.full_ad_credits,
            below_auto_recharge_threshold=balance.credits_balance < balance.auto_recharge_threshold,
        )


class TypeCounts(_Schema):
    """Number of returned transactions of each type."""

    Deduction: int
    Purchase: int
    Bonus: int
    Refund: int


class Forecast(_Schema):
    """When the balance runs out if spending continues as in the returned transactions."""

    burn_rate_credits_per_day: float | None = Field(
        description="Net credits spent per day: deductions minus refunds over the time from the oldest to the newest "
        "returned transaction. Assumes the window's pace continues; purchases and bonuses are not counted."
    )
    latest_balance: int | None = Field(description="balance_after of the newest returned transaction.")
    days_until_empty: float | None = Field(
        description="latest_balance / burn_rate_credits_per_day, ignoring auto-recharge and future purchases."
    )
    unavailable_reason: str | None = Field(description="Why there is no estimate, when the fields above are null.")
    days_until_empty_low: float | None = Field(
        default=None,
        description="With kept history: days_until_empty at the busier days' pace (the upper quartile of daily "
        "net spend over the complete days in history_days).",
    )
    days_until_empty_high: float | None = Field(
        default=None,
        description="At the quieter days' pace (the lower quartile); null when that pace spends nothing.",
    )
    history_days: int | None = Field(
        default=None,
        description="Complete days of kept history the rate and range come from; null: from the returned transactions.",
    )

    @classmethod
    def of(cls, by_time: list[Transaction]) -> Forecast:
        """The forecast over `by_time` (oldest first)."""
        latest = by_time[-1].balance_after if by_time else None
        if len(by_time) < 2:
            return cls._none(latest, "fewer than two transactions")
        span_s = (by_time[-1].timestamp - by_time[0].timestamp).total_seconds()
        if span_s < _MIN_FORECAST_SPAN_S:
            return cls._none(latest, "the transactions span less than an hour")
        spent = sum(-tx.credits_delta for tx in by_time if tx.type == "Deduction")
        refunded = sum(tx.credits_delta for tx in by_time if tx.type == "Refund")
        net = spent - refunded
        if net <= 0:
            return cls._none(latest, "no net deductions in the window")
        rate = net * _SECONDS_PER_DAY / span_s
        days = max(latest or 0, 0) / rate
        return cls(
            burn_rate_credits_per_day=round(rate, 3),
            latest_balance=latest,
            days_until_empty=round(days, 2),
            unavailable_reason=None,
        )

    def with_daily(self, daily_net: list[int]) -> Forecast:
        """The forecast from whole days of history (net credits spent per day, complete days only), with a range
        from their spread; this one (from the returned transactions) when fewer than two days spent anything."""
        if len(daily_net) < 2 or sum(daily_net) <= 0:
            return self
        rate = sum(daily_net) / len(daily_net)
        quieter, _, busier = statistics.quantiles(daily_net, n=4, method="inclusive")
        balance = max(self.latest_balance or 0, 0)
        return Forecast(
            burn_rate_credits_per_day=round(rate, 3),
            latest_balance=self.latest_balance,
            days_until_empty=round(balance / rate, 2),
            unavailable_reason=None,
            days_until_empty_low=round(balance / busier, 2) if busier > 0 else None,
            days_until_empty_high=round(balance / quieter, 2) if quieter > 0 else None,
            history_days=len(daily_net),
        )

    @classmethod
    def _none(cls, latest: int | None, reason: str) -> Forecast:
        return cls(
            burn_rate_credits_per_day=None, latest_balance=latest, days_until_empty=None, unavailable_reason=reason
        )


class UsageSummary(_Schema):
    """Totals over the returned transactions."""

    credits_spent: int = Field(description="Sum of negative credit deltas, as a positive number.")
    credits_added: int = Field(description="Sum of positive credit deltas.")
    usd_purchased: float = Field(description="Sum of usd_amount over Purchase transactions.")
    count_by_type: TypeCounts
    oldest_at: str | None = Field(description="Timestamp of the oldest returned transaction.")
    newest_at: str | None = Field(description="Timestamp of the newest returned transaction.")
    forecast: Forecast

    @classmethod
    def of(cls, transactions: list[Transaction]) -> UsageSummary:
        counts = dict.fromkeys(TRANSACTION_TYPES, 0)
        spent = added = 0
        usd = Decimal(0)
        for tx in transactions:
            counts[tx.type] += 1
            if tx.credits_delta < 0:
                spent -= tx.credits_delta
            else:
                added += tx.credits_delta
            if tx.type == "Purchase" and tx.usd_amount is not None:
                usd += Decimal(str(tx.usd_amount))  # exact cents, no float drift across many purchases
        by_time = sorted(transactions, key=lambda tx: tx.timestamp)
        return cls(
            credits_spent=spent,
            credits_added=added,
            usd_purchased=float(usd),
            count_by_type=TypeCounts(**counts),
            oldest_at=by_time[0].at if by_time else None,
            newest_at=by_time[-1].at if by_time else None,
            forecast=Forecast.of(by_time),
        )


class ArgumentSchema(GenerateJsonSchema):
    """A tool argument as published: an optional one without its null arm (omitting it is how a caller says "all"),
    an enum without the type its values already say."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        return {k: v for k, v in super().literal_schema(schema).items() if k != "type"}


class UsageArguments(BaseModel):
    """`dessert.get_usage`'s arguments: the published input schema's properties and their validation."""

    model_config = ConfigDict(extra="forbid", strict=False)

    limit: int | None = Field(default=None, ge=1, le=50, description="Return at most this many (1-50).")
    types: list[TransactionType] | None = Field(default=None, min_length=1, description="Only these transaction types.")
    since: datetime | None = Field(
        default=None, description="Only transactions at or after this ISO 8601 time (UTC if no offset)."
    )


class UsageRangeArguments(UsageArguments):
    """`dessert.get_usage`'s arguments when the server keeps history: a time range, and pages."""

    until: datetime | None = Field(default=None, description="Only transactions before this time.")
    cursor: str | None = Field(
        default=None, min_length=1, max_length=1000, description="A previous result's next_cursor: its next page."
    )


class Seam(_Schema):
    """A place in the range where transactions may be missing, and the time range it may hide."""

    kind: SeamKind
    after: str | None = Field(description="Newest known transaction before it; null: none known.")
    before: str | None = Field(description="Oldest known transaction after it; null: none observed.")


class UsageReport(_Schema):
    """Credit transactions, most recent first, with a summary."""

    recent_transactions: list[Transaction]
    summary: UsageSummary
    history_complete: bool = Field(
        description="True only when every matching transaction in the range is on this page or the next ones: the "
        "range lies within one API answer, or kept history proves every seam over it."
    )
    seams: list[Seam] = Field(description="Where transactions may be missing; empty when history_complete.")
    next_cursor: str | None = Field(description="Pass as cursor, with the same arguments, for the next older page.")
    note: str = Field(description="What the feed covers.")

    @classmethod
    def build(
        cls,
        usage: Usage,
        *,
        limit: int | None = None,
        types: list[TransactionType] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UsageReport:
        """From one API answer: sort it newest first (stable), filter it locally (the API has no query parameters)."""
        feed = sorted(usage.recent_transactions, key=lambda tx: tx.timestamp, reverse=True)
        since, until = as_utc(since), as_utc(until)
        matching = [tx for tx in feed if in_range(tx.timestamp, since, until) and (not types or tx.type in types)]
        returned = matching[:limit] if limit is not None else matching
        complete = window_covers(feed, since)
        return cls.of(
            returned,
            complete=complete,
            seams=[] if complete else [Seam(kind="gap", after=None, before=feed[-1].at)],
            next_cursor=None,
            note=(
                f"The Dessert API returns only the last {USAGE_FEED_SIZE} transactions; "
                f"{len(returned)} of the {len(feed)} it returned are shown, newest first."
            ),
        )

    @classmethod
    def of(
        cls, returned: list[Transaction], *, complete: bool, seams: list[Seam], next_cursor: str | None, note: str
    ) -> UsageReport:
        return cls(
            recent_transactions=returned,
            summary=UsageSummary.of(returned),
            history_complete=complete,
            seams=seams,
            next_cursor=next_cursor,
            note=note,
        )


def as_utc(at: datetime | None) -> datetime | None:
    """An argument's time, aware: without an offset it is UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def in_range(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


def window_covers(feed: list[Transaction], since: datetime | None) -> bool:
    """Whether one API answer (newest first) holds every transaction from `since` on: it is shorter than the API's
    window, or its oldest entry is already older than `since`."""
    return len(feed) < USAGE_FEED_SIZE or (since is not None and feed[-1].timestamp < since)


class AlertSettings(BaseModel):
    """`dessert.set_alerts`'s arguments (remote modes): the caller's own thresholds; one left out keeps its value."""

    model_config = ConfigDict(extra="forbid", strict=False)

    balance_below: int | None = Field(default=None, ge=0, description="Credits; 0 turns it off.")
    runway_days: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="Days; 0 turns it off.")
    spike_factor: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Times the 7-day median; 0 turns it off."
    )


class AlertThresholds(_Schema):
    """The thresholds the account's alerts are judged against from now on."""

    balance_below: int
    runway_days: float
    spike_factor: float
