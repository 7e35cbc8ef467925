"""The ledger's poller: reads each account's usage often enough that nothing scrolls out of the API's window unseen.

`GET /v1/usage` shows an account's last 50 transactions. Between two reads the poller lets fewer than half of that
accrue (`TARGET_NEW_ROWS`) at the rate the account's own recent rows show, within [min_s, max_s]: an idle account is
read every max_s, a busy one as often as min_s allows, and one busier than `TARGET_NEW_ROWS / min_s` a second
outruns it, which the ledger then records as a gap. The balance is read with the first usage read, then with the
first one at least max_s after it. Errors back off exponentially (the API's Retry-After when it is longer); a key
Dessert rejects ends the polling of its account. With a lease (replicas sharing one database), an account is polled
by one replica at a time; a poller that stops (cleanly, or its server's run cancelled) gives its leases up
(`release_leases`), so that another process sharing the database reads those accounts at once rather than once the
leases run out.

`gets_per_hour` gives the upstream cost of that schedule; docs/ledger-polling.md tabulates it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

import anyio

from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import DEFAULT_LEDGER_POLL_MAX_S, DEFAULT_LEDGER_POLL_MIN_S
from dessert_mcp.models import USAGE_FEED_SIZE, Balance, Transaction, Usage

if TYPE_CHECKING:  # the ledger itself loads on the first answer kept
    from dessert_mcp.ledger.api import Ledger

logger = logging.getLogger("dessert_mcp.ledger")

# Transactions allowed to accrue between two reads: under half the API's window, leaving room for a burst.
TARGET_NEW_ROWS: Final = 20
# Accounts read at once when several are due together.
CONCURRENT_READS: Final = 4
# How long a stopping poller waits to give up its leases; past it they run out by themselves.
RELEASE_WAIT_S: Final = 2.0
# The errors after which an account is not read again: its key no longer works.
STOP_CODES: Final = frozenset({"auth_invalid", "forbidden", "not_configured"})

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class PollTarget(NamedTuple):
    """An account the poller may read: a Dessert client holding its key, and how to name it in the ledger."""

    client: DessertClient
    account: Callable[[], Awaitable[str]]  # the ledger's opaque id for it (resolving it may need the ledger)


Targets = Callable[[], Awaitable[Sequence[PollTarget]]]


class Lease(Protocol):
    """Take (or renew) the lease `name` for this process for `ttl_s` seconds unless another holds it; True if taken
    (the ledger database's `take_lease`, with this process as the holder and renewal allowed)."""

    async def __call__(self, name: str, *, ttl_s: float) -> bool: ...


# Give up the named leases this process holds (the ledger database's `release_leases`, this process the holder).
ReleaseLeases = Callable[[Collection[str]], Awaitable[None]]


def next_interval(rate_per_s: float, *, min_s: float, max_s: float) -> float:
    """Seconds until the next read of an account doing `rate_per_s` transactions a second."""
    if rate_per_s <= 0:
        return max_s
    return min(max_s, max(min_s, TARGET_NEW_ROWS / rate_per_s))


def gets_per_hour(rate_per_s: float, *, min_s: float, max_s: float) -> float:
    """Upstream GETs an hour for one account at a steady rate: a usage read every `next_interval`, and a balance
    read on the first usage read at least max_s after the last one."""
    interval = next_interval(rate_per_s, min_s=min_s, max_s=max_s)
    balance_every = interval * math.ceil(max_s / interval - 1e-9)
    return 3600 / interval + 3600 / balance_every


def window_rate(rows: Sequence[Transaction], seen_newest_for_s: float) -> float:
    """Transactions a second an answer shows: its rows over the time from the oldest of them to now.

    "Now" is the newest row's time plus how long this poller has seen that row as the newest (on its own clock), so
    that a clock that differs from Dessert's changes nothing; an account gone quiet shows a falling rate."""
    if not rows:
        return 0.0
    span = (rows[0].timestamp - rows[-1].timestamp).total_seconds() + max(0.0, seen_newest_for_s)
    return len(rows) / max(span, 1.0)


def _row(tx: Transaction) -> tuple[object, ...]:
    return (tx.type, tx.credits_delta, tx.balance_after, tx.usd_amount, tx.description, tx.at)


@dataclass
class _Watch:
    """What the poller knows of one account."""

    due: float  # the next read, on the poller's clock
    interval: float
    newest: tuple[object, ...] | None = None
    newest_seen: float = 0.0  # when the current newest row was first seen
    balance_read: float | None = None
    failures: int = 0
    stopped: DessertClient | None = None  # the client whose key Dessert rejected
    reads: int = 0
    read_at: float | None = None  # the last read, by the poller or a tool call
    gaps: int = 0
    behind: bool = False  # the last read left a gap (said once, until the poller keeps up again)


class Poller:
    """Reads the usage (and balance) of each target account on its own schedule and hands the answers to `ledger`.

    poller = Poller(ledger, targets, min_s=..., max_s=...)   # `ledger`, or an async function opening it on first use
    await poller.run()          # until cancelled; or, step by step (tests): delay = await poller.step()
    """

    def __init__(
        self,
        ledger: Ledger | Callable[[], Awaitable[Ledger]],
        targets: Targets,
        *,
        min_s: float = DEFAULT_LEDGER_POLL_MIN_S,
        max_s: float = DEFAULT_LEDGER_POLL_MAX_S,
        lease: Lease | None = None,
        release: ReleaseLeases | None = None,
        first_read_s: float | None = None,
        clock: Clock = time.time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        """`first_read_s`: how long after the poller first sees an account it reads it, unless a tool call's answer
        (`answered`) came first and set the schedule; default max_s."""
        if not 0 < min_s <= max_s:
            raise ValueError("the poll interval bounds must satisfy 0 < min_s <= max_s")
        self._ledger = ledger
        self.targets = targets
        self.min_s = min_s
        self.max_s = max_s
        self.lease = lease
        self.release = release
        self._held: set[str] = set()  # the leases last taken, until given up
        self.first_read_s = max_s if first_read_s is None else first_read_s
        self.clock = clock
        self.sleep = sleep
        self.watches: dict[str, _Watch] = {}
        self._ledger_warned = False

    async def run(self) -> None:
        """Poll until cancelled. Never raises: a failure is logged and the schedule goes on."""
        while True:
            try:
                delay = await self.step()
            except Exception:  # a bug here must not end the schedule, nor reach the server
                logger.exception("The ledger's poller failed; it tries again")
                delay = self.min_s
            await self.sleep(delay)

    async def step(self) -> float:
        """Read every account that is due; returns the seconds until the next one is (at most min_s, so that a new
        account is noticed)."""
        targets = {t.client.account: t for t in await self.targets()}
        now = self.clock()
        for gone in self.watches.keys() - targets.keys():
            del self.watches[gone]
        due = []
        for key, target in targets.items():
            watch = self.watches.get(key)
            if watch is None:
                watch = self.watches[key] = _Watch(due=now + self.first_read_s, interval=self.min_s)
            if watch.stopped is not None and watch.stopped is not target.client:
                watch.stopped, watch.failures = None, 0  # a new client for the account: its key may work
            if watch.stopped is None and watch.due <= now:
                due.append((target, watch))
        if due:
            limiter = anyio.CapacityLimiter(CONCURRENT_READS)
            async with anyio.create_task_group() as tg:
                for target, watch in due:
                    tg.start_soon(self._poll_limited, limiter, target, watch)
        upcoming = [w.due for w in self.watches.values() if w.stopped is None]
        return max(0.0, min([self.clock() + self.min_s, *upcoming]) - self.clock())

    def answered(self, client_account: str, usage: Usage) -> None:
        """A tool call read this account's usage (`DessertClient.account` names it): that counts as a read, so the
        next one is scheduled from it."""
        now = self.clock()
        watch = self.watches.setdefault(client_account, _Watch(due=now, interval=self.min_s))
        self._schedule(watch, usage.recent_transactions, now)

    async def _poll_limited(self, limiter: anyio.CapacityLimiter, target: PollTarget, watch: _Watch) -> None:
        async with limiter:
            await self.poll(target, watch)

    async def poll(self, target: PollTarget, watch: _Watch) -> None:
        """One read of one account (unless another replica holds its lease), and its next due time."""
        now = self.clock()
        try:
            account = await target.account()
        except Exception as exc:  # the ledger cannot name it now (its database is gone): try again later
            self._ledger_failed(exc)
            watch.due = now + watch.interval
            return
        ours = await self._take_lease(account, watch)
        if not ours:
            watch.due = now + watch.interval  # another replica reads it meanwhile, into the same database
            return
        try:
            usage = await target.client.get_usage()
        except DessertAPIError as exc:
            self._failed(account, target, watch, exc, now)
            return
        balance = None
        if watch.balance_read is None or now - watch.balance_read >= self.max_s:
            try:
                balance = await target.client.get_balance()
            except DessertAPIError as exc:  # the usage answer is kept all the same; the balance is read next time
                logger.debug("Reading the balance for the ledger failed (account %s, %s)", account, exc.code)
        if watch.failures:
            logger.info("Reading usage for the ledger works again (account %s)", account)
        watch.failures = 0
        watch.reads += 1
        now = self.clock()
        rows, since_last = usage.recent_transactions, now - (watch.read_at or now)
        self._schedule(watch, rows, now)
        if self.lease is not None:
            await self._take_lease(account, watch)  # held until the next read this answer scheduled
        await self._record(account, watch, rows, balance, now, since_last)

    async def _take_lease(self, account: str, watch: _Watch) -> bool:
        """The account's lease until this poller's next read of it is due (and a step later), so that another
        replica takes over only once this one stops reading it; True if this poller may read it."""
        if self.lease is None:
            return True
        name = f"ledger-poll:{account}"
        try:
            taken = await self.lease(name, ttl_s=watch.interval + self.min_s)
        except Exception as exc:  # the database that holds the leases (and the ledger) is gone: try again later
            self._ledger_failed(exc)
            return False
        if taken:
            self._held.add(name)
        else:
            self._held.discard(name)
        return taken

    async def release_leases(self) -> None:
        """Give up the leases this poller holds (when it stops), so that another process sharing the
        database polls those accounts at once. Bounded by RELEASE_WAIT_S; never raises: unreleased, a lease runs
        out by itself."""
        if self.release is None or not self._held:
            return
        held, self._held = set(self._held), set()
        with anyio.move_on_after(RELEASE_WAIT_S, shield=True):
            try:
                await self.release(held)
            except Exception as exc:  # the database is gone: the leases run out instead
                logger.debug("The ledger's poller could not give up its leases (%s)", type(exc).__name__)

    def _schedule(self, watch: _Watch, rows: Sequence[Transaction], now: float) -> None:
        watch.read_at = now
        newest = _row(rows[0]) if rows else None
        if newest != watch.newest:
            watch.newest, watch.newest_seen = newest, now
        rate = window_rate(rows, now - watch.newest_seen)
        watch.interval = next_interval(rate, min_s=self.min_s, max_s=self.max_s)
        watch.due = now + watch.interval

    async def _record(
        self,
        account: str,
        watch: _Watch,
        rows: Sequence[Transaction],
        balance: Balance | None,
        now: float,
        since_last: float,
    ) -> None:
        # No later than the answer on Dessert's clock, whatever this machine's says: its newest row's time.
        observed = rows[0].timestamp if rows else datetime.fromtimestamp(now, UTC)
        try:
            ledger = await self._opened()
            outcome = await ledger.record_usage(account, rows, observed)
            if balance is not None:
                await ledger.record_balance(account, balance, datetime.fromtimestamp(now, UTC))
        except Exception as exc:  # whatever the database raises: the schedule goes on, the calls never see it
            self._ledger_failed(exc)
            return
        self._ledger_warned = False
        if balance is not None:
            watch.balance_read = now
        if outcome.placement not in ("gap", "unverified") or watch.reads == 1:
            watch.behind = False
            return
        watch.gaps += 1
        if not watch.behind:
            watch.behind = True
            logger.warning(
                "Account %s had more than %d transactions between two reads %.0f s apart; the ledger records a gap. "
                "Lower DESSERT_LEDGER_POLL_MIN_S to keep up.",
                account,
                USAGE_FEED_SIZE,
                since_last,
            )

    async def _opened(self) -> Ledger:
        # A server's ledger opens on its first use (the database libraries are not loaded for a server never used).
        source = self._ledger
        return await source() if callable(source) else source

    def _ledger_failed(self, exc: Exception) -> None:
        if not self._ledger_warned:
            self._ledger_warned = True
            logger.warning("The ledger could not keep a polled answer (%s); polling goes on", type(exc).__name__)

    def _failed(self, account: str, target: PollTarget, watch: _Watch, exc: DessertAPIError, now: float) -> None:
        if exc.code in STOP_CODES:
            watch.stopped = target.client
            logger.info("Stopped polling account %s for the ledger: %s", account, exc.message)
            return
        watch.failures += 1
        backoff = min(self.max_s, self.min_s * 2 ** (watch.failures - 1)) * random.uniform(0.5, 1.0)
        delay = max(backoff, exc.retry_after_s or 0.0)
        watch.due = now + delay
        if watch.failures == 1:
            logger.warning(
                "Reading usage for the ledger failed (account %s, %s); trying again with backoff",
                account,
                exc.code,
            )
