"""`dessert-mcp ledger status|export|forget`, and `accounts revoke` deleting the account's rows, through the real
command against a ledger a server wrote; never a key in what they print."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from dessert_mcp.auth import DessertOAuthProvider, OAuthConfig, Store, generate_encryption_key
from dessert_mcp.config import Secret
from dessert_mcp.ledger import EXPORT_FIELDS, remote_account
from dessert_mcp.ledger.database import DatabaseLedger
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.models import Balance
from dessert_mcp.storage import Database
from tests.support.api import CANARY_KEY, DOCS_BALANCE, assert_no_secret
from tests.support.auth import link_directly
from tests.support.ledger import T0, chain, read_at, window

SECOND = "dsk_live_SECOND_a1b2c3d4e5f60718293a"
ROWS = chain([-2, -1, 5, -3] * 30)  # 120 rows a minute apart; the API serves the last 50 of them
BALANCE = Balance.model_validate(DOCS_BALANCE)


HEADINGS = "ACCOUNT ROWS OLDEST (UTC) NEWEST (UTC) GAPS UNVERIFIED FLAGGED LAST POLL (UTC)".split()  # noqa: SIM905


def ledger_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dessert_mcp", *args], env=env, capture_output=True, text=True, timeout=60
    )


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "XDG_"))}
    return env | {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state")} | extra


async def record(url: str, windows: dict[str, list[int]]) -> None:
    """What a server does as it reads usage: each account's windows (ends into ROWS), then a balance."""
    ledger = DatabaseLedger(Database(url, schemas=[LEDGER_SCHEMA]))
    try:
        for account, ends in windows.items():
            for end in ends:
                await ledger.record_usage(account, window(ROWS, end), read_at(ROWS, end))
            await ledger.record_balance(account, BALANCE, read_at(ROWS, ends[-1]))
    finally:
        await ledger.aclose()


@pytest.fixture
def recorded(tmp_path: Path) -> dict[str, str]:
    """A ledger with two accounts: `key:a` read twice with a gap between (rows 1-50 and 71-120), `key:b` once."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    anyio.run(record, url, {"key:a": [50, 120], "key:b": [40]})
    return clean_env(tmp_path, DESSERT_MCP_DATABASE_URL=url)


def test_status_says_where_the_ledger_is_and_each_account_s_rows_span_gaps_and_last_poll(
    recorded: dict[str, str], tmp_path: Path
) -> None:
    result = ledger_cli("ledger", "status", env=recorded)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Ledger: {tmp_path / 'ledger.db'}"
    assert lines[1].split() == [*HEADINGS]
    a, b = (line.split() for line in lines[2:])
    first, last = ROWS[0].timestamp, ROWS[-1].timestamp
    assert a[:2] == ["key:a", "100"]
    assert " ".join(a[2:6]) == f"{first:%Y-%m-%d %H:%M} {last:%Y-%m-%d %H:%M}"
    # Rows 51-70 were never seen (the gap between the two reads), and a full first window may not be the first row.
    assert a[6] == "2"
    assert " ".join(a[9:]) == f"{read_at(ROWS, 120):%Y-%m-%d %H:%M}"
    assert b[:2] == ["key:b", "40"]
    assert b[6] == "0"  # fewer than 50 rows: the account's whole history


@pytest.mark.parametrize("form", ["csv", "jsonl"])
def test_export_writes_every_row_in_the_range_oldest_first_to_stdout(form: str, recorded: dict[str, str]) -> None:
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)
    args = ["--format", form, "--account", "key:a", "--since", since.isoformat(), "--until", "2026-05-01T00:30"]
    result = ledger_cli("ledger", "export", *args, env=recorded)
    assert result.returncode == 0, result.stderr
    if form == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert list(rows[0]) == list(EXPORT_FIELDS)
    else:
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [tx for tx in ROWS if since <= tx.timestamp < until]
    assert [(r["at"], int(r["credits_delta"]), int(r["balance_after"])) for r in rows] == [
        (tx.at, tx.credits_delta, tx.balance_after) for tx in expected
    ]
    assert {r["account"] for r in rows} == {"key:a"}
    assert "Exported 20 row(s)." in result.stderr


def test_export_of_every_account_holds_every_row_and_an_empty_range_only_the_header(recorded: dict[str, str]) -> None:
    everything = ledger_cli("ledger", "export", env=recorded)
    assert everything.returncode == 0, everything.stderr
    assert len(everything.stdout.splitlines()) == 1 + 100 + 40
    none = ledger_cli("ledger", "export", "--since", "2030-01-01", env=recorded)
    assert none.stdout.splitlines() == [",".join(EXPORT_FIELDS)]


def test_a_malformed_or_reversed_range_is_refused_in_one_line(recorded: dict[str, str]) -> None:
    bad = ledger_cli("ledger", "export", "--since", "last tuesday", env=recorded)
    assert bad.returncode == 2
    assert "not an ISO 8601 date or time: 'last tuesday'" in bad.stderr
    reversed_ = ledger_cli("ledger", "export", "--since", "2026-05-02", "--until", "2026-05-01", env=recorded)
    assert reversed_.returncode == 1
    assert reversed_.stderr.strip() == "dessert-mcp: error: --since must be before --until."


def test_forget_deletes_one_account_s_rows_and_leaves_the_others(recorded: dict[str, str]) -> None:
    forgot = ledger_cli("ledger", "forget", "key:a", env=recorded)
    assert forgot.returncode == 0, forgot.stderr
    assert "Deleted 100 row(s) of key:a" in forgot.stdout
    status = ledger_cli("ledger", "status", env=recorded).stdout
    assert "key:a" not in status
    assert "key:b" in status
    assert ledger_cli("ledger", "export", "--account", "key:a", env=recorded).stdout.count("\n") == 1
    again = ledger_cli("ledger", "forget", "key:a", env=recorded)
    assert "Deleted 0 row(s)" in again.stdout


def test_without_a_database_url_the_ledger_is_an_owner_only_file_in_the_user_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = clean_env(tmp_path)
    folder = tmp_path / "data" / "dessert-mcp"
    before = ledger_cli("ledger", "status", env=env)
    assert before.returncode == 0, before.stderr
    assert f"No ledger at {folder / 'ledger.db'} yet" in before.stderr
    assert "No accounts recorded yet." in before.stdout
    assert not folder.exists()  # asking does not create it
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    from dessert_mcp.ledger.tables import default_ledger_url

    anyio.run(record, default_ledger_url(), {"key:a": [50]})
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "ledger.db").stat().st_mode & 0o777 == 0o600
    after = ledger_cli("ledger", "status", env=env)
    assert after.stdout.splitlines()[0] == f"Ledger: {folder / 'ledger.db'}"
    assert "key:a" in after.stdout


def test_revoking_a_linked_account_deletes_its_ledger_rows_and_no_key_is_printed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}"  # one database for tokens and the ledger, as DESSERT_MCP_DATABASE_URL
    key = generate_encryption_key()

    async def link_and_record() -> list[str]:
        config = OAuthConfig(public_url="https://mcp.example.com", encryption_key=Secret(key), database_url=url)
        provider = DessertOAuthProvider(config, Store(url))
        try:
            for dessert_key in (CANARY_KEY, SECOND):
                await link_directly(provider, dessert_key)
            ids = [a.id for a in await provider.store.list_accounts()]
        finally:
            await provider.aclose()
        await record(url, {remote_account(ids[0]): [50], remote_account(ids[1]): [30]})
        return ids

    gone, kept = anyio.run(link_and_record)
    env = clean_env(tmp_path, DESSERT_MCP_DATABASE_URL=url, DESSERT_MCP_ENCRYPTION_KEY=key)
    revoked = ledger_cli("accounts", "revoke", gone, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "Deleted its usage history from the ledger (50 row(s))." in revoked.stdout
    status = ledger_cli("ledger", "status", env=env)
    assert remote_account(gone) not in status.stdout
    assert f"{remote_account(kept):40}       30" in status.stdout
    exported = ledger_cli("ledger", "export", "--format", "jsonl", env=env)
    everything = revoked.stdout + revoked.stderr + status.stdout + status.stderr + exported.stdout + exported.stderr
    assert_no_secret(everything)
    assert_no_secret(everything, SECOND)
    database = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("remote.db"))
    assert CANARY_KEY.encode() not in database
    assert SECOND.encode() not in database


def test_an_unreachable_database_is_one_line_that_hides_its_password(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    url = f"postgresql://ledger:hunter2secret@127.0.0.1:{free_port()}/ledger"  # nothing listens there
    result = ledger_cli("ledger", "status", env=clean_env(tmp_path, DESSERT_MCP_DATABASE_URL=url))
    assert result.returncode == 1
    assert result.stderr.startswith("dessert-mcp: error: The ledger database (postgresql+asyncpg://ledger:***@")
    assert "is unreachable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2secret" not in result.stdout + result.stderr
