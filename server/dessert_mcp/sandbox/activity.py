"""A sandbox account that lives: ads generated over time, refunds and auto-recharge, deterministic from a seed.

`dessert-mcp sandbox --activity RATE` and the tests' live fixtures serve a `LiveAccount`: it starts with a history
of a few hundred rows, of which `GET /v1/usage` shows only the last 50, and each read first catches up with the
clock, so the window moves as a real account's does. The transactions are a seeded Poisson process, generated in
order and only up to the clock's time: when, and how often, the account is read changes nothing in its history.
The clock is injectable (`clock=`), so a test advances time instead of sleeping; the CLI uses the real one.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from dessert_mcp.sandbox.account import (
    AUTO_RECHARGE_CREDITS,
    AUTO_RECHARGE_THRESHOLD,
    AUTO_RECHARGE_USD,
    PRICES,
    SandboxAccount,
)

Clock = Callable[[], float]  # seconds since the epoch, like time.time

# Rows made before the account is first read: more than the API's window, so the ledger has something to keep.
HISTORY_ROWS: Final = 300
# Rows kept in memory: a sandbox left running for days at a high rate must not grow without bound.
MAX_ROWS: Final = 10_000
# Above this a read after a long pause would spend seconds generating rows nobody can see.
MAX_RATE_PER_S: Final = 100.0
REFUND_SHARE: Final = 0.05  # of the transactions: a failed render refunded
_UNITS: Final = {"": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0}
_RATE: Final = re.compile(r"\s*(?P<n>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(?:/\s*(?P<unit>s|min|h))?\s*", re.I)


def parse_rate(text: str) -> float:
    """`--activity RATE`: transactions per second, or per minute or hour with `/min`, `/h` (`2`, `30/min`, `100/h`).

    Raises ValueError with one sentence saying what is accepted.
    """
    match = _RATE.fullmatch(text)
    rate = float(match["n"]) / _UNITS[(match["unit"] or "").lower()] if match else 0.0
    if not 0 < rate <= MAX_RATE_PER_S:
        raise ValueError(
            f"--activity takes a rate above 0 and at most {MAX_RATE_PER_S:g} transactions per second, "
            f"written like 2, 30/min or 100/h; got {text!r}."
        )
    return rate


def iso(at: float) -> str:
    """The API's timestamp form: `2026-05-19T18:24:01.000Z` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class LiveAccount(SandboxAccount):
    """A `SandboxAccount` whose transactions keep coming, `rate` a second on average, as `clock` moves on.

    Each transaction is an ad generation (1 to 8 static or full ads, what the balance pays for) or, now and then, a
    refund of one failed full or static ad; after a deduction that leaves the balance below the auto-recharge
    threshold, the next transaction is the auto-recharge purchase, as on the real account. So `rate` counts every
    row the usage feed shows.
    """

    rate: float = 1.0
    seed: int = 0
    clock: Clock = time.time
    history_rows: int = HISTORY_ROWS
    ledger: list[dict[str, Any]] = field(default_factory=list)
    _rng: random.Random = field(init=False, repr=False)
    _offset: float = field(init=False, repr=False)
    _elapsed: float = field(init=False, repr=False)  # the next transaction's time, before `_offset`
    _purchased: int = field(init=False, default=0, repr=False)
    _credits: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.rate <= MAX_RATE_PER_S:
            raise ValueError(f"rate must be above 0 and at most {MAX_RATE_PER_S:g} per second")
        self._rng = random.Random(self.seed)
        self._elapsed = self._rng.expovariate(self.rate)
        # The history ends now: the welcome bonus, then `history_rows` transactions, the last of them at clock().
        times = []
        for _ in range(self.history_rows):
            times.append(self._elapsed)
            self._elapsed += self._rng.expovariate(self.rate)
        self._offset = self.clock() - (times[-1] if times else 0.0)
        start = self._offset + (times[0] if times else 0.0)
        self._append("Bonus", 50, None, "Welcome bonus", start - 3600)
        for at in times:
            self._transact(self._offset + at)

    def lifetime_purchased(self) -> int:
        return self._purchased

    def balance(self) -> dict[str, Any]:
        self.catch_up()
        return super().balance()

    def usage(self) -> dict[str, Any]:
        self.catch_up()
        return super().usage()

    def catch_up(self) -> int:
        """Make the transactions due by now; how many rows were added."""
        now, added = self.clock(), 0
        while self._offset + self._elapsed <= now:
            self._transact(self._offset + self._elapsed)
            added += 1
            self._elapsed += self._rng.expovariate(self.rate)
        del self.ledger[: max(0, len(self.ledger) - MAX_ROWS)]
        return added

    def _transact(self, at: float) -> None:
        rng = self._rng
        if self._credits < AUTO_RECHARGE_THRESHOLD:
            # The purchase is a transaction of its own, a moment after the deduction that called for it.
            self._append("Purchase", AUTO_RECHARGE_CREDITS, AUTO_RECHARGE_USD, "Auto-recharge", at)
            return
        ad_format = rng.choice(("static", "full"))
        price = PRICES[ad_format]
        if rng.random() < REFUND_SHARE:
            self._append("Refund", price, None, f"Refund: render failed (count=1, format={ad_format})", at)
            return
        count = min(rng.randint(1, 8), self._credits // price)  # at least 1: the balance is at the threshold or more
        self._append("Deduction", -count * price, None, f"API ad generation (count={count}, format={ad_format})", at)

    def _append(self, kind: str, delta: int, usd: float | None, description: str, at: float) -> None:
        self._credits += delta
        if kind == "Purchase":
            self._purchased += delta
        self.ledger.append(
            {
                "type": kind,
                "credits_delta": delta,
                "balance_after": self._credits,
                "usd_amount": usd,
                "description": description,
                "at": iso(at),
            }
        )
