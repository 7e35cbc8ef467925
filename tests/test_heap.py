"""Garbage collection in a serving process: the start-up heap frozen and young collections spaced out, and what the
ledger's first use loads frozen too, once, only in a process that froze its start-up heap. Each case runs in a fresh
interpreter: freezing is for the life of a process, and this one's heap is pytest's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dessert_mcp.heap import YOUNG_OBJECTS

# Runs a Recorder on a real SQLite ledger in a fresh interpreter, and prints the freeze count at each step.
_LEDGER_FIRST_USE = textwrap.dedent(
    """
    import gc, json, sys
    import anyio
    from dessert_mcp.heap import keep_start_up_heap
    from dessert_mcp.recorder import Recorder
    from dessert_mcp.telemetry import Observer

    def open_ledger():
        from dessert_mcp.ledger.database import DatabaseLedger
        from dessert_mcp.ledger.tables import LEDGER_SCHEMA
        from dessert_mcp.storage import Database

        return DatabaseLedger(Database(sys.argv[2], schemas=[LEDGER_SCHEMA], label="ledger database"))

    async def main():
        if sys.argv[1] == "serving":
            keep_start_up_heap()
        counts = {"started": gc.get_freeze_count(), "threshold": gc.get_threshold()[0]}
        recorder = Recorder(open_ledger, Observer())
        async with recorder.running():
            kept = []
            for step in ("first", "second"):
                kept.append([{} for _ in range(5_000)])  # made after the first use: a second freeze would take them
                recorder.write("account_for_key", lambda ledger: ledger.account_for_key("dsk_test_" + step))
                await recorder.settled()
                assert recorder.writing
                counts[step] = gc.get_freeze_count()
        print(json.dumps(counts))

    anyio.run(main)
    """
)


def _freeze_counts(mode: str, tmp_path: Path) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _LEDGER_FIRST_USE, mode, f"sqlite:///{tmp_path / 'ledger.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    counts: dict[str, int] = json.loads(done.stdout)
    return counts


def test_a_serving_process_freezes_what_the_ledgers_first_use_loaded_and_only_once(tmp_path: Path) -> None:
    counts = _freeze_counts("serving", tmp_path)
    assert counts["started"] > 0
    assert counts["threshold"] == YOUNG_OBJECTS
    # The database libraries (SQLAlchemy, aiosqlite) and the engine: tens of thousands of objects, now frozen.
    assert counts["first"] > counts["started"] + 10_000, counts
    # Once per process: what was made since is not frozen (frozen objects still go when nothing refers to them).
    assert counts["second"] <= counts["first"], counts


_STDIO = textwrap.dedent(
    """
    import gc, json
    from dessert_mcp.config import Settings
    from dessert_mcp.stdio import serve_stdio

    serve_stdio(Settings(ledger=False, log_level="WARNING"))  # stdin is empty: it serves nothing and returns
    print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()[0]}), flush=True)
    """
)


def test_the_stdio_server_freezes_its_start_up_heap_and_spaces_out_young_collections() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STDIO], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.splitlines()[-1])
    assert counts["frozen"] > 10_000
    assert counts["threshold"] == YOUNG_OBJECTS


def test_a_process_that_never_froze_its_heap_is_left_as_it_is_when_the_ledger_works(tmp_path: Path) -> None:
    counts = _freeze_counts("library", tmp_path)
    assert counts == {"started": 0, "threshold": counts["threshold"], "first": 0, "second": 0}
    assert counts["threshold"] != YOUNG_OBJECTS
