"""The database ledger across restarts and between processes, and what its file holds."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dessert_mcp.ledger import InMemoryLedger
from tests.ledger.conftest import MakeLedger, open_database_ledger
from tests.ledger.writer import CHAIN
from tests.support.api import CANARY_KEY
from tests.support.ledger import read_at, window
from tests.support.measured import coverage_env

REPO = Path(__file__).parents[2]


async def test_a_restart_keeps_the_history_and_the_account_ids(database_url: str) -> None:
    first = open_database_ledger(database_url)
    account = await first.account_for_key(CANARY_KEY)
    for end in (50, 80, 120):
        await first.record_usage(account, window(CHAIN, end), read_at(CHAIN, end))
    before = await first.history(account, limit=500)
    await first.aclose()

    again = open_database_ledger(database_url)
    try:
        assert await again.account_for_key(CANARY_KEY) == account
        after = await again.history(account, limit=500)
        assert after == before
        assert [r.transaction for r in after.rows] == CHAIN[119::-1][:120]
        outcome = await again.record_usage(account, window(CHAIN, 150), read_at(CHAIN, 150))
        assert (outcome.placement, outcome.added) == ("joined", 30)
    finally:
        await again.aclose()


async def test_two_processes_writing_one_account_lose_and_copy_nothing(database_url: str) -> None:
    # Two pollers of one account, one process each, interleaving answers that overlap by 48 or 49 rows, on a
    # database that exists already.
    ledger = open_database_ledger(database_url)
    await ledger.status()
    await ledger.aclose()
    env = {**os.environ, **coverage_env(), "PYTHONPATH": str(REPO)}
    writers = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.ledger.writer", database_url, "key:shared", str(first), "2", "120"),
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for first in (50, 51)
    ]
    for writer in writers:
        assert writer.stdout is not None
        assert await writer.stdout.readline() == b"ready\n"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write(b"go\n")
        await writer.stdin.drain()
    for writer in writers:
        _, err = await writer.communicate()
        assert writer.returncode == 0, err.decode()[-2000:]
    ledger = open_database_ledger(database_url)
    try:
        page = await ledger.history("key:shared", since=CHAIN[1].timestamp, limit=500)
        assert [r.transaction for r in page.rows] == CHAIN[50 + 2 * 119 : 0 : -1]
        assert all(not r.flags for r in page.rows)
        assert page.history_complete
        status = await ledger.status()
        assert [(a.account, a.rows, a.stretches) for a in status.accounts] == [("key:shared", 289, 1)]
    finally:
        await ledger.aclose()


def _everything_in(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir())


async def test_the_database_file_never_holds_the_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_database_ledger(f"sqlite:///{path}")
    account = await ledger.account_for_key(CANARY_KEY)
    await ledger.record_usage(account, window(CHAIN, 60), read_at(CHAIN, 60))
    await ledger.aclose()
    stored = _everything_in(tmp_path)
    for fragment in (CANARY_KEY, CANARY_KEY[-12:], CANARY_KEY[9:21]):
        assert fragment.encode() not in stored
    assert (path.stat().st_mode & 0o777) == 0o600


async def test_the_in_memory_and_database_ledgers_agree(make_ledger: MakeLedger) -> None:
    ledger, reference = make_ledger(), InMemoryLedger()
    for end in (200, 40, 90, 60, 250, 251, 300):
        answer, at = window(CHAIN, end), read_at(CHAIN, end)
        assert await ledger.record_usage("key:a", answer, at) == await reference.record_usage("key:a", answer, at)
    for since, until in ((None, None), (CHAIN[10].timestamp, CHAIN[100].timestamp), (CHAIN[95].timestamp, None)):
        assert await ledger.history("key:a", since, until, limit=500) == await reference.history(
            "key:a", since, until, limit=500
        )
        assert await ledger.spend("key:a", since, until, period="week") == await reference.spend(
            "key:a", since, until, period="week"
        )
    assert (await ledger.status()).accounts == (await reference.status()).accounts


async def test_an_answer_seen_again_unchanged_is_vouched_for_in_fewer_statements_than_a_merge(
    database_url: str,
) -> None:
    ledger = open_database_ledger(database_url)
    statements: list[str] = []

    def executed(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(ledger.database.engine.sync_engine, "before_cursor_execute", executed)
    costs = []
    try:
        for minutes in range(4):
            statements.clear()
            await ledger.record_usage("key:test", window(CHAIN, 80), read_at(CHAIN, 80) + timedelta(minutes=minutes))
            costs.append(len(statements))
    finally:
        await ledger.aclose()
    # The first read merges, the second merges and finds nothing new; from then on the same answer is recognised.
    assert costs[3] == costs[2] < costs[1]


async def test_an_answer_seen_again_after_another_process_wrote_is_merged_as_the_in_memory_ledger_does(
    database_url: str,
) -> None:
    ours, theirs = open_database_ledger(database_url), open_database_ledger(database_url)
    reference = InMemoryLedger()
    reads = [(ours, 80, 0), (ours, 80, 1), (theirs, 120, 0), (ours, 80, 2), (ours, 80, 3)]
    try:
        for ledger, end, minutes in reads:
            at = read_at(CHAIN, end) + timedelta(minutes=minutes)
            expected = await reference.record_usage("key:test", window(CHAIN, end), at)
            assert await ledger.record_usage("key:test", window(CHAIN, end), at) == expected
        assert await ours.history("key:test", limit=500) == await reference.history("key:test", limit=500)
        assert (await ours.status()).accounts == (await reference.status()).accounts
    finally:
        await ours.aclose()
        await theirs.aclose()
