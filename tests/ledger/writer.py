"""A separate process writing one account's answers into a database ledger, for the concurrency tests.

    python -m tests.ledger.writer URL ACCOUNT FIRST_END STEP COUNT

records the answers of `tests.ledger.writer.CHAIN` ending at FIRST_END, FIRST_END + STEP, ... (COUNT of them),
each in its own transaction, as a poller would. Once its database is open it prints "ready" and waits for a line on
stdin, so that the test can start every writer at once; exits 0 when all are in.
"""

from __future__ import annotations

import asyncio
import sys

from tests.ledger.conftest import open_database_ledger
from tests.support.ledger import chain, read_at, window

# Deductions with a purchase now and then, and a deduction refunded in the same second (identical neighbours).
CHAIN = chain([-5, -15, 5, -5, 250, -45, 45, -15] * 60)


async def write(url: str, account: str, first_end: int, step: int, count: int) -> None:
    ledger = open_database_ledger(url)
    try:
        await ledger.status()  # the engine open and the schema in place: what is left is the writing
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for end in range(first_end, first_end + step * count, step):
            await ledger.record_usage(account, window(CHAIN, end), read_at(CHAIN, end))
    finally:
        await ledger.aclose()


if __name__ == "__main__":
    url, account, first_end, step, count = sys.argv[1:6]
    asyncio.run(write(url, account, int(first_end), int(step), int(count)))
