"""The sandbox's account: a consistent history (the docs' example is its latest state) and the two answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from dessert_mcp.models import USAGE_FEED_SIZE

CREDIT_USD: Final = 0.10
PRICES: Final = {"static": 5, "full": 15}  # credits per ad, by format
AUTO_RECHARGE_THRESHOLD: Final = 20
AUTO_RECHARGE_USD: Final = 25.0
AUTO_RECHARGE_CREDITS: Final = round(AUTO_RECHARGE_USD / CREDIT_USD)

# (type, credits_delta, usd_amount, description, at), oldest first; the last three are the docs' example.
_HISTORY: Final = [
    ("Bonus", 50, None, "Welcome bonus", "2026-05-12T15:08:22.000Z"),
    ("Deduction", -15, None, "API ad generation (count=1, format=full)", "2026-05-12T15:20:03.000Z"),
    ("Deduction", -10, None, "API ad generation (count=2, format=static)", "2026-05-12T15:41:37.000Z"),
    ("Purchase", 250, 25.0, "Credit purchase", "2026-05-13T09:02:11.000Z"),
    ("Deduction", -75, None, "API ad generation (count=5, format=full)", "2026-05-13T09:30:45.000Z"),
    ("Deduction", -30, None, "API ad generation (count=6, format=static)", "2026-05-14T11:12:09.000Z"),
    ("Refund", 15, None, "Refund: render failed (count=1, format=full)", "2026-05-15T08:45:50.000Z"),
    ("Deduction", -60, None, "API ad generation (count=4, format=full)", "2026-05-16T16:03:27.000Z"),
    ("Deduction", -45, None, "API ad generation (count=3, format=full)", "2026-05-17T10:19:58.000Z"),
    ("Deduction", -40, None, "API ad generation (count=8, format=static)", "2026-05-18T13:37:14.000Z"),
    ("Deduction", -40, None, "API ad generation (count=8, format=static)", "2026-05-19T18:23:30.000Z"),
    ("Purchase", 250, 25.0, "Auto-recharge", "2026-05-19T18:23:48.000Z"),
    ("Deduction", -45, None, "API ad generation (count=3, format=full)", "2026-05-19T18:24:01.000Z"),
]


def _initial_ledger() -> list[dict[str, Any]]:
    ledger: list[dict[str, Any]] = []
    balance = 0
    for kind, delta, usd, description, at in _HISTORY:
        balance += delta
        row = {"type": kind, "credits_delta": delta, "balance_after": balance, "usd_amount": usd}
        ledger.append(row | {"description": description, "at": at})
    return ledger


@dataclass
class SandboxAccount:
    """The emulated account; the balance endpoint is derived from the ledger, with the docs' example settings."""

    ledger: list[dict[str, Any]] = field(default_factory=_initial_ledger)

    def balance(self) -> dict[str, Any]:
        credits = self.ledger[-1]["balance_after"] if self.ledger else 0
        return {
            "credits_balance": credits,
            "credits_balance_usd_equivalent": round(credits * CREDIT_USD, 2),
            "credits_lifetime_purchased": self.lifetime_purchased(),
            "auto_recharge_enabled": True,
            "auto_recharge_threshold": AUTO_RECHARGE_THRESHOLD,
            "auto_recharge_amount_usd": AUTO_RECHARGE_USD,
            "pricing": {
                "credit_usd": CREDIT_USD,
                "static_ad_credits": PRICES["static"],
                "full_ad_credits": PRICES["full"],
            },
        }

    def lifetime_purchased(self) -> int:
        return sum(r["credits_delta"] for r in self.ledger if r["type"] == "Purchase")

    def usage(self) -> dict[str, Any]:
        return {"recent_transactions": list(reversed(self.ledger[-USAGE_FEED_SIZE:]))}
