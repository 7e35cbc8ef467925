"""The alert rules: what one observation of an account shows, and which alerts it fires or clears.

Level rules (the balance, the runway, a day's spend) fire when their value crosses the threshold and clear only once
it is back beyond the threshold by `HYSTERESIS` of it, so a balance hovering at a threshold fires once, not at every
read. Values and thresholds are compared as the decimals they are written as, so the edges are exact: a runway of
3.3 days clears an alert at 3 (in binary floating point 3 * 1.1 is 3.3000000000000003). Event rules (an
auto-recharge, a gap in the ledger) fire once per event and stay active for `EVENT_ACTIVE`.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Literal, get_args

from dessert_mcp.models import Transaction

Rule = Literal["balance_below", "runway_below", "spend_spike", "auto_recharge", "ledger_gap"]
RULES: Final[tuple[Rule, ...]] = get_args(Rule)
# What happened to an alert: it fired, or it cleared (an event alert's clearing is its end of `EVENT_ACTIVE`, not one).
Event = Literal["fired", "cleared"]
LEVEL_RULES: Final[frozenset[Rule]] = frozenset({"balance_below", "runway_below", "spend_spike"})

# A level alert clears once its value is this fraction of the threshold beyond it.
HYSTERESIS: Final = Decimal("0.1")
# How long an event alert (auto-recharge, ledger gap) counts as active after it fired.
EVENT_ACTIVE: Final = timedelta(days=1)
# A day's spend is compared with the median of this many whole days before it.
SPIKE_DAYS: Final = 7
# The description the Dessert API gives the Purchase an auto-recharge makes.
AUTO_RECHARGE: Final = "auto-recharge"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the rules fire (0 turns a level rule off)."""

    balance_below: int = 0  # credits
    runway_days: float = 0.0  # days until the balance runs out, at the ledger's forecast rate
    spike_factor: float = 0.0  # times the trailing median of whole days' net spend


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    rule: Rule
    account: str
    value: float
    threshold: float
    fired_at: datetime
    cleared_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.cleared_at is None or self.cleared_at > now

    def summary(self) -> str:
        """One line for a tool result: the rule, its value against its threshold, since when."""
        since = self.fired_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.rule in LEVEL_RULES:
            sign = ">" if self.rule == "spend_spike" else "<"
            return f"{self.rule}: {self.value:g} {sign} {self.threshold:g} since {since}"
        if self.rule == "auto_recharge":
            return f"auto_recharge: {self.value:+g} credits at {since}"
        return f"{self.rule} at {since}"


@dataclass(frozen=True, slots=True)
class Reading:
    """What one observation of an account shows (None: unknown, the rule is left as it is)."""

    balance: int | None = None
    runway_days: float | None = None
    today_spend: int | None = None
    trailing_median: float | None = None
    new_rows: Sequence[Transaction] = ()
    gap: bool = False


def is_auto_recharge(tx: Transaction) -> bool:
    return tx.type == "Purchase" and AUTO_RECHARGE in tx.description.lower()


def trailing_median(nets: Sequence[int]) -> float | None:
    """The median of the last SPIKE_DAYS whole days' net spend; None when fewer than three days or it is zero."""
    days = list(nets)[-SPIKE_DAYS:]
    if len(days) < 3:
        return None
    median = statistics.median(days)
    return float(median) if median > 0 else None


def _decimal(number: float) -> Decimal:
    """A number as written: a float's shortest representation (3.3, not the binary fraction just below it)."""
    return Decimal(repr(float(number)))


def _level(rule: Rule, reading: Reading, thresholds: Thresholds) -> tuple[float, float, bool, bool] | None:
    """(value, threshold, crossed, back) for a level rule the reading can judge; back: beyond the hysteresis band."""
    if rule == "balance_below" and thresholds.balance_below > 0 and reading.balance is not None:
        limit, value = _decimal(thresholds.balance_below), _decimal(reading.balance)
        crossed, back = value < limit, value >= limit + max(Decimal(1), limit * HYSTERESIS)
    elif rule == "runway_below" and thresholds.runway_days > 0 and reading.runway_days is not None:
        limit, value = _decimal(thresholds.runway_days), _decimal(reading.runway_days)
        crossed, back = value < limit, value >= limit * (1 + HYSTERESIS)
    elif (
        rule == "spend_spike"
        and thresholds.spike_factor > 0
        and reading.today_spend is not None
        and reading.trailing_median is not None
    ):
        limit = _decimal(thresholds.spike_factor) * _decimal(reading.trailing_median)
        value = _decimal(reading.today_spend)
        crossed, back = value > limit, value <= limit * (1 - HYSTERESIS)
    else:
        return None
    return float(value), float(limit), crossed, back


def decide(
    account: str, reading: Reading, thresholds: Thresholds, active: Mapping[Rule, Alert], now: datetime
) -> tuple[list[Alert], list[Alert]]:
    """The alerts this reading fires and the active ones it clears (each returned with its `cleared_at`)."""
    fired: list[Alert] = []
    cleared: list[Alert] = []
    for rule in sorted(LEVEL_RULES):
        judged = _level(rule, reading, thresholds)
        current = active.get(rule)
        if judged is None:
            if current is not None and current.cleared_at is None and not _enabled(rule, thresholds):
                cleared.append(_cleared(current, now))  # the rule was turned off
            continue
        value, limit, crossed, back = judged
        if current is None and crossed:
            fired.append(_new(rule, account, value, limit, now))
        elif current is not None and back:
            cleared.append(_cleared(current, now))
    for tx in reading.new_rows:
        if is_auto_recharge(tx):
            # Named after the transaction: replicas that both see it keep one alert.
            key = f"{tx.at}/{tx.credits_delta}/{tx.balance_after}"
            fired.append(_new("auto_recharge", account, tx.credits_delta, 0, now, until=now + EVENT_ACTIVE, key=key))
    if reading.gap:
        fired.append(_new("ledger_gap", account, 1, 0, now, until=now + EVENT_ACTIVE))
    return fired, cleared


def _enabled(rule: Rule, thresholds: Thresholds) -> bool:
    return {
        "balance_below": thresholds.balance_below > 0,
        "runway_below": thresholds.runway_days > 0,
        "spend_spike": thresholds.spike_factor > 0,
    }.get(rule, True)


def _new(
    rule: Rule,
    account: str,
    value: float,
    threshold: float,
    now: datetime,
    *,
    until: datetime | None = None,
    key: str | None = None,
) -> Alert:
    """A new alert; with `key`, its id is derived from (account, rule, key), so whoever fires it names it alike."""
    made = uuid.uuid4() if key is None else uuid.uuid5(uuid.NAMESPACE_URL, f"dessert-mcp:{account}/{rule}/{key}")
    return Alert(made.hex, rule, account, float(value), float(threshold), now, until)


def _cleared(alert: Alert, now: datetime) -> Alert:
    return Alert(alert.id, alert.rule, alert.account, alert.value, alert.threshold, alert.fired_at, now)
