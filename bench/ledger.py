"""The ledger: how fast answers merge (windows/s), how much disk 100,000 rows take, and how many GETs the poller
sends per account-hour. Report only.

Standalone: `.venv/bin/python bench/ledger.py [--rows N] [--new-per-poll K] [--database-url URL]`. A synthetic
account (deductions of both ad formats, refunds, auto-recharges, a few seconds apart, from a fixed seed) is read the
way the poller reads it: the API's last 50 rows each time, K of them new. Each backend merges every answer (memory,
a SQLite file in a temp directory, and PostgreSQL when a URL is given); windows/s is shown over the first and the
last tenth as well, so a merge whose cost grows with the history stands out. The SQLite size is the file after the
ledger closes, scaled to 100,000 rows; PostgreSQL's, the ledger tables with their indexes.
Each SQLite commit waits for the disk (synchronous=FULL), so on a slow disk windows/s there is the disk's commit
rate: the figure per CPU-second shows the merge's own cost beside it.

Polling: the poller with the default bounds runs through one virtual hour (its clock is moved, not waited for)
against the sandbox over real HTTP on 127.0.0.1, once per account activity (idle, and live accounts from one
transaction a minute to two a second), and the GETs the sandbox answered are counted beside what the schedule
predicts (`poller.gets_per_hour`).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import sqlalchemy as sa
from _repo import ROOT  # noqa: F401  (the tests' sandbox, imported below)
from tests.support.faults import ThreadedFaultySandbox

from dessert_mcp.client import DessertClient
from dessert_mcp.config import DEFAULT_LEDGER_POLL_MAX_S, DEFAULT_LEDGER_POLL_MIN_S, Settings
from dessert_mcp.ledger import InMemoryLedger, Ledger
from dessert_mcp.ledger.database import DatabaseLedger
from dessert_mcp.ledger.poller import Poller, PollTarget, gets_per_hour
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.models import USAGE_FEED_SIZE, Transaction
from dessert_mcp.sandbox.activity import LiveAccount
from dessert_mcp.storage import Database

ACCOUNT = "key:bench"
PER_100K = 100_000


def synthetic_account(rows: int, seed: int = 7) -> list[Transaction]:
    """Oldest first: what a busy account's API answers would show."""
    rng = random.Random(seed)
    at, balance, found = datetime(2026, 1, 1, tzinfo=UTC), 500, []
    for _ in range(rows):
        at += timedelta(seconds=rng.randint(1, 30), milliseconds=rng.randint(0, 999))
        if balance < 20:
            kind, delta, description, usd = "Purchase", 250, "Auto-recharge", 25.0
        elif found and found[-1].type == "Deduction" and rng.random() < 0.03:
            kind, delta, description, usd = "Refund", -found[-1].credits_delta, "Refund: generation failed", None
        else:
            count, fmt = rng.randint(1, 3), rng.choice(["full", "static"])
            kind, delta = "Deduction", -count * (15 if fmt == "full" else 5)
            description, usd = f"API ad generation (count={count}, format={fmt})", None
        balance += delta
        found.append(
            Transaction(
                type=kind,
                credits_delta=delta,
                balance_after=balance,
                usd_amount=usd,
                description=description,
                at=at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            )
        )
    return found


async def merge_all(ledger: Ledger, history: list[Transaction], step: int) -> tuple[list[float], list[float]]:
    """Feed the answers a poller would see; returns each merge's seconds, and the process's CPU seconds for each."""
    took, cpu = [], []
    for end in range(min(USAGE_FEED_SIZE, len(history)), len(history) + 1, step):
        answer = list(reversed(history[max(0, end - USAGE_FEED_SIZE) : end]))
        read = history[end].timestamp if end < len(history) else history[-1].timestamp + timedelta(seconds=1)
        start, start_cpu = time.perf_counter(), time.process_time()
        await ledger.record_usage(ACCOUNT, answer, read)
        took.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return took, cpu


def _rates(seconds: list[float]) -> str:
    tenth = max(1, len(seconds) // 10)
    return (
        f"{len(seconds) / sum(seconds):,.0f} (first tenth {tenth / sum(seconds[:tenth]):,.0f}, "
        f"last tenth {tenth / sum(seconds[-tenth:]):,.0f})"
    )


def report(name: str, measured: tuple[list[float], list[float]]) -> None:
    took, cpu = measured
    print(f"  {name}, {len(took):,} windows: {_rates(took)} windows/s; {_rates(cpu)} per CPU-second", flush=True)


def directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


async def check(ledger: Ledger, history: list[Transaction]) -> None:
    page = await ledger.history(ACCOUNT, since=history[1].timestamp, limit=1)
    assert page.history_complete, "the benchmark's answers should join into one stretch"


# Transactions a second of the accounts the polling cost is measured for (None: the sandbox's idle account).
POLL_RATES: dict[str, float | None] = {
    "idle": None,
    "1 a minute": 1 / 60,
    "6 a minute": 0.1,
    "1 a second": 1.0,
    "2 a second": 2.0,
}


class VirtualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def polling_gets(rate: float | None, hours: float = 1.0) -> int:
    """Upstream GETs (usage and balance) the poller sends for one account in `hours` of virtual time."""
    clock = VirtualClock()
    account = (lambda: LiveAccount(rate=rate, seed=11, clock=clock)) if rate is not None else None
    with ThreadedFaultySandbox(**({"account": account} if account else {})) as sandbox:
        settings = Settings.from_env({}, log_level="WARNING", max_attempts=1)
        settings = replace(settings, base_url=sandbox.url).with_key(sandbox.key)
        async with DessertClient.from_settings(settings) as client:

            async def named() -> str:
                return ACCOUNT

            async def targets() -> list[PollTarget]:
                return [PollTarget(client, named)]

            poller = Poller(InMemoryLedger(), targets, first_read_s=0, clock=clock)
            sandbox.reset()
            end = clock.now + hours * 3600
            while clock.now < end:
                clock.now += await poller.step()
            return int(sandbox.stats()["total"])


async def report_polling() -> None:
    bounds = {"min_s": DEFAULT_LEDGER_POLL_MIN_S, "max_s": DEFAULT_LEDGER_POLL_MAX_S}
    print(f"poller: GETs per account-hour with the default bounds ({bounds['min_s']:g} s, {bounds['max_s']:g} s)")
    for label, rate in POLL_RATES.items():
        measured = await polling_gets(rate)
        predicted = gets_per_hour(rate or 0.0, **bounds)
        print(f"  {label}: {measured} measured, {predicted:.0f} by the schedule", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=PER_100K)
    parser.add_argument("--new-per-poll", type=int, default=25, help="new rows between two reads (1..50)")
    parser.add_argument("--database-url", help="also measure PostgreSQL (a database the bench may fill)")
    parser.add_argument("--polling-only", action="store_true", help="only the poller's GETs per account-hour")
    args = parser.parse_args()
    await report_polling()
    if args.polling_only:
        return
    history = synthetic_account(args.rows)
    print(f"ledger merge: {args.rows:,} rows, {args.new_per_poll} new per answer of {USAGE_FEED_SIZE}")

    memory = InMemoryLedger()
    report("in memory", await merge_all(memory, history, args.new_per_poll))
    await check(memory, history)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        sqlite = DatabaseLedger(Database(f"sqlite:///{path}", schemas=[LEDGER_SCHEMA]))
        report("SQLite", await merge_all(sqlite, history, args.new_per_poll))
        await check(sqlite, history)
        await sqlite.aclose()
        size = directory_bytes(Path(tmp))
        print(f"  SQLite file: {size * PER_100K / args.rows / 1e6:.1f} MB per 100,000 rows", flush=True)

    if args.database_url:
        database = Database(args.database_url, schemas=[LEDGER_SCHEMA])
        pg = DatabaseLedger(database)
        await pg.forget(ACCOUNT)
        report("PostgreSQL", await merge_all(pg, history, args.new_per_poll))
        await check(pg, history)
        async with database.transaction() as conn:
            tables = [t for t in LEDGER_SCHEMA.metadata.tables if t.startswith("ledger_")]
            sizes = [
                (await conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": t})).scalar_one()
                for t in tables
            ]
        print(f"  PostgreSQL tables: {sum(sizes) * PER_100K / args.rows / 1e6:.1f} MB per 100,000 rows", flush=True)
        await pg.forget(ACCOUNT)
        await pg.aclose()


if __name__ == "__main__":
    anyio.run(main)
