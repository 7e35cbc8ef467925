"""The recorder, which hands what calls see to the ledger: with the ledger's database going bad under a running server
(deleted, full or made read-only) every call still answers from the API, the failure is logged once (not per call) and
the metric counts it; and an answer equal to the last one kept is held back and written once, not per call."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.ledger.database import DatabaseLedger
from dessert_mcp.ledger.tables import LEDGER_FILE, LEDGER_SCHEMA
from dessert_mcp.observe.metrics import Metrics
from dessert_mcp.recorder import Recorder, Write
from dessert_mcp.service import DessertService
from dessert_mcp.storage import Database
from dessert_mcp.telemetry import Observer
from dessert_mcp.tools import build_server
from tests.support import STARTUP_TIMEOUT_S
from tests.support.faults import ThreadedFaultySandbox
from tests.support.ledger import T0, iso, window
from tests.support.servers import sandbox_env
from tests.test_history import ROWS, MovingFeed, _api, _settings, _usage


async def test_a_deleted_ledger_database_leaves_every_call_answering_and_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dessert_mcp")
    feed = MovingFeed(ROWS)
    metrics = Metrics()
    database = Database(f"sqlite:///{tmp_path / 'ledger.db'}", schemas=[LEDGER_SCHEMA], label="ledger database")
    settings = _settings()
    service = DessertService(
        settings, transport=_api(feed).transport(), observer=metrics, ledger=DatabaseLedger(database), clock=feed.now
    )
    async with Client(build_server(settings, service=service)) as client:
        kept = await _usage(client, since=iso(T0))  # the first answer, kept
        assert len(kept["recent_transactions"]) == 50
        _delete(tmp_path, "ledger.db*")
        for end in (70, 90, 120):
            feed.end = end
            assert (await client.call_tool("dessert_get_balance", {})).is_error is False
            plain = await _usage(client)
            assert (await client.call_tool("dessert_get_spend", {})).is_error is False
        assert service.recorder is not None
        await service.recorder.settled()
    assert len(plain["recent_transactions"]) == 50
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "ledger" in r.getMessage()]
    assert len([m for m in said if "ledger failed (record" in m]) == 1, said
    failures = metrics.registry.get_sample_value("dessert_mcp_ledger_failures_total", {"operation": "record_usage"})
    assert failures == 6


def _delete(folder: Path, pattern: str) -> None:
    for path in folder.glob(pattern):
        path.unlink()


def _mutable(paths: list[Path]) -> None:
    subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True, check=False)


def _immutable(paths: list[Path]) -> None:
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.decode().strip()}")


# Once the files turn immutable every write fails (and reads wait for the writes, so they answer without the ledger).
# This used to kill the server with SIGBUS now and then under load: in WAL mode SQLite wrote its memory-mapped -shm on
# every transaction, reads included, and no check before a transaction could close that race. The storage layer now
# keeps a rollback journal and maps nothing (tests/storage/test_database.py).
async def test_a_read_only_ledger_database_leaves_a_stdio_server_answering_and_is_said_once(
    tmp_path: Path, sandbox_server: ThreadedFaultySandbox
) -> None:
    data = tmp_path / "data"
    # No poller: the calls' own writes are the ones said once.
    env = sandbox_env(
        sandbox_server, XDG_DATA_HOME=str(data), DESSERT_MCP_LOG_LEVEL="WARNING", DESSERT_LEDGER_POLL="off"
    )
    params = StdioServerParameters(command=sys.executable, args=["-m", "dessert_mcp"], env=env)
    errors = tmp_path / "stderr.log"
    files: list[Path] = []
    try:
        with errors.open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                assert (await client.call_tool("dessert_get_usage", {})).is_error is False
                ranged = await client.call_tool("dessert_get_usage", {"since": "2000-01-01T00:00:00Z"})
                assert ranged.is_error is False  # answered from the database: the first answer is in it
                files = sorted(data.rglob(LEDGER_FILE + "*"))
                assert files, "the ledger database was not created in the user data directory"
                _immutable(files)
                for _ in range(3):
                    assert (await client.call_tool("dessert_get_balance", {})).is_error is False
                    assert (await client.call_tool("dessert_get_usage", {})).is_error is False
                    assert (await client.call_tool("dessert_get_spend", {})).is_error is False
    finally:
        _mutable(files)
    log = errors.read_text()
    assert log.count("The ledger failed (record") == 1, log


async def test_an_answer_is_filed_at_the_time_its_request_was_sent_not_when_it_arrived() -> None:
    from datetime import timedelta

    import httpx2

    from dessert_mcp.ledger import InMemoryLedger
    from dessert_mcp.models import UsageArguments
    from tests.support.api import DOCS_USAGE, FakeDessertAPI

    now = [T0]
    seen: list[object] = []

    def answer(_request: httpx2.Request) -> httpx2.Response:
        now[0] = T0 + timedelta(seconds=30)  # the round trip takes 30 s on this clock
        return httpx2.Response(200, json=DOCS_USAGE)

    class Watching(InMemoryLedger):
        async def record_usage(self, account, transactions, observed_at):  # type: ignore[no-untyped-def]
            seen.append(observed_at)
            return await super().record_usage(account, transactions, observed_at)

    api = FakeDessertAPI({"/v1/usage": answer})
    service = DessertService(_settings(), transport=api.transport(), ledger=Watching(), clock=lambda: now[0])
    async with service.running():
        await service.usage(UsageArguments())
        assert service.recorder is not None
        await service.recorder.read(lambda ledger: ledger.status())  # once the write queued before it is done
    assert seen == [T0]


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own, which the test can fill (mounting needs root, as this machine's tests run)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _write_forever(fd: int) -> None:
    while True:
        os.write(fd, bytes(65536))


def _fill(folder: Path) -> None:
    """Write a file into `folder` until its filesystem has no space left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left") as raised:
            _write_forever(fd)
        assert raised.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


async def _calls_answer_while_the_ledger_fails(
    database: Database, spoil: Callable[[], object], caplog: pytest.LogCaptureFixture
) -> Metrics:
    """A server on `database` keeps one answer; `spoil()` breaks the database; every call after still answers from
    the API, through a real MCP client. Returns the server's metrics."""
    caplog.set_level(logging.WARNING, logger="dessert_mcp")
    feed = MovingFeed(ROWS)
    metrics = Metrics()
    settings = _settings(DESSERT_CACHE_TTL_S="0")
    service = DessertService(
        settings, transport=_api(feed).transport(), observer=metrics, ledger=DatabaseLedger(database), clock=feed.now
    )
    assert service.recorder is not None
    async with Client(build_server(settings, service=service)) as client:
        kept = await _usage(client, since=iso(T0))
        assert len(kept["recent_transactions"]) == 50
        await service.recorder.settled()
        spoil()
        for end in (70, 90):  # two rounds: two failures each, one warning
            feed.end = end
            plain = await _usage(client)
            assert plain["recent_transactions"] == [tx.model_dump(mode="json") for tx in window(ROWS, end)]
            assert (await client.call_tool("dessert_get_spend", {})).is_error is False
        await service.recorder.settled()
    said = [r.getMessage() for r in caplog.records if "The ledger failed (record" in r.getMessage()]
    assert len(said) == 1, said
    return metrics


async def test_a_full_ledger_database_leaves_every_call_answering_and_is_said_once(
    small_filesystem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"sqlite:///{small_filesystem / 'ledger.db'}", schemas=[LEDGER_SCHEMA], label="ledger")
    metrics = await _calls_answer_while_the_ledger_fails(database, lambda: _fill(small_filesystem), caplog)
    failures = metrics.registry.get_sample_value("dessert_mcp_ledger_failures_total", {"operation": "record_usage"})
    assert failures == 4  # each of the four answers after the disk filled up: counted, said once


async def test_a_ledger_database_locked_by_another_process_leaves_every_call_answering_and_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    database = Database(f"sqlite:///{path}", schemas=[LEDGER_SCHEMA], label="ledger")
    holder = sqlite3.connect(path, isolation_level=None)  # another program holding the write lock

    def lock() -> None:
        holder.execute("BEGIN EXCLUSIVE")

    try:
        metrics = await _calls_answer_while_the_ledger_fails(database, lock, caplog)
    finally:
        holder.close()
    failures = metrics.registry.get_sample_value("dessert_mcp_ledger_failures_total", {"operation": "record_usage"})
    assert failures == 4


# -- repeats: an answer equal to the last one kept is held back, not written per call ------------------------------


def _logging_recorder() -> tuple[Recorder, list[int]]:
    written: list[int] = []
    return Recorder(InMemoryLedger, Observer()), written


def _writer(written: list[int], n: int, *, fail: bool = False) -> Write:
    async def write(_ledger: object) -> None:
        if fail:
            raise sqlite3.OperationalError("disk I/O error")
        written.append(n)

    return write


async def test_repeats_of_a_series_last_answer_are_written_as_the_newest_before_the_next_change() -> None:
    recorder, written = _logging_recorder()
    async with recorder.running():
        for n, value in enumerate(["a", "a", "a", "b", "b", "a"]):
            recorder.write("w", _writer(written, n), series="balance", value=value)
        recorder.write("w", _writer(written, 6))  # no series: never a repeat
        await recorder.settled()
        assert written == [0, 2, 3, 4, 5, 6]


async def test_series_are_apart_a_value_repeats_only_the_last_answer_of_its_own_series() -> None:
    recorder, written = _logging_recorder()
    async with recorder.running():
        recorder.write("w", _writer(written, 0), series=("balance", "x"), value="a")
        recorder.write("w", _writer(written, 1), series=("balance", "y"), value="a")
        recorder.write("w", _writer(written, 2), series=("usage", "x"), value="a")
        await recorder.settled()
        assert written == [0, 1, 2]


async def test_a_held_back_repeat_is_written_on_its_own_without_a_read() -> None:
    recorder, written = _logging_recorder()
    done = anyio.Event()

    async def newest(_ledger: object) -> None:
        written.append(1)
        done.set()

    async with recorder.running():
        recorder.write("w", _writer(written, 0), series="s", value="a")
        recorder.write("w", newest, series="s", value="a")
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await done.wait()
        assert written == [0, 1]


async def test_a_stopping_recorder_writes_the_repeats_it_held_back() -> None:
    recorder, written = _logging_recorder()
    async with recorder.running():
        recorder.write("w", _writer(written, 0), series="s", value="a")
        recorder.write("w", _writer(written, 1), series="s", value="a")
    assert written == [0, 1]


async def test_an_equal_answer_after_a_failed_write_is_still_written_as_the_newest_repeat() -> None:
    recorder, written = _logging_recorder()
    async with recorder.running():
        recorder.write("w", _writer(written, 0, fail=True), series="s", value="a")
        recorder.write("w", _writer(written, 1), series="s", value="a")
        recorder.write("w", _writer(written, 2), series="s", value="a")
        await recorder.settled()
        assert written == [2]


async def test_many_equal_balance_answers_cost_two_ledger_writes_and_the_ledger_is_as_of_the_last() -> None:
    from datetime import timedelta

    from tests.support.api import DOCS_BALANCE, FakeDessertAPI

    now = [T0]
    seen: list[tuple[int, object]] = []

    class Counting(InMemoryLedger):
        async def record_balance(self, account, balance, observed_at):  # type: ignore[no-untyped-def]
            seen.append((balance.credits_balance, observed_at))
            return await super().record_balance(account, balance, observed_at)

    lower = {**DOCS_BALANCE, "credits_balance": DOCS_BALANCE["credits_balance"] - 10}
    answers = [DOCS_BALANCE] * 50 + [lower] * 2
    api = FakeDessertAPI({"/v1/balance": lambda _request: httpx2.Response(200, json=answers.pop(0))})
    service = DessertService(_settings(), transport=api.transport(), ledger=Counting(), clock=lambda: now[0])
    first, later = T0, T0 + timedelta(seconds=49)
    async with service.running():
        assert service.recorder is not None
        for n in range(52):
            now[0] = T0 + timedelta(seconds=n)
            await service.balance()
        await service.recorder.settled()
    credits = DOCS_BALANCE["credits_balance"]
    assert seen == [
        (credits, first),
        (credits, later),
        (credits - 10, T0 + timedelta(seconds=50)),
        (credits - 10, T0 + timedelta(seconds=51)),
    ]


async def test_a_change_arriving_while_due_repeats_are_written_lands_after_them_in_its_series() -> None:
    recorder, _ = _logging_recorder()
    written: list[str] = []
    entered, go = anyio.Event(), anyio.Event()

    def named(name: str) -> Write:
        async def write(_ledger: object) -> None:
            written.append(name)
            if name == "A1 again":  # the drain is writing the due repeats when B changes
                entered.set()
                await go.wait()

        return write

    async with recorder.running():
        for series in ("A", "B"):
            recorder.write("w", named(f"{series}1"), series=series, value=1)
        for series in ("A", "B"):
            recorder.write("w", named(f"{series}1 again"), series=series, value=1)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await entered.wait()
        recorder.write("w", named("B2"), series="B", value=2)
        recorder.write("w", named("B2 again"), series="B", value=2)
        go.set()
        await recorder.settled()
    assert written == ["A1", "B1", "A1 again", "B1 again", "B2", "B2 again"]


async def test_a_read_waits_only_for_what_was_handed_over_before_it_while_other_series_keep_repeating() -> None:
    recorder, written = _logging_recorder()

    async def repeat(_ledger: object) -> None:
        await anyio.lowlevel.checkpoint()  # a write takes a while, as a database's does: calls go on meanwhile

    async def repeating() -> None:
        while True:
            for n in range(20):
                recorder.write("w", repeat, series=n, value="a")
            await anyio.lowlevel.checkpoint()

    async with recorder.running(), anyio.create_task_group() as tg:
        for n in range(20):
            recorder.write("w", _writer(written, n), series=n, value="a")
        tg.start_soon(repeating)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await recorder.settled()  # never nothing pending: repeats keep being held back
        tg.cancel_scope.cancel()
    assert written[:20] == list(range(20))
