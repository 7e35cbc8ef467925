"""Fixtures for the auth wing: a real PostgreSQL (Debian's binaries, a temp cluster on 127.0.0.1), a SQLite
file, the sandbox that knows the canary key, and dessert-mcp with auth served by a real uvicorn."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from dessert_mcp.auth._crypto import generate_encryption_key
from dessert_mcp.sandbox import SandboxAccount
from tests.support.api import CANARY_KEY
from tests.support.auth import FlowClient, Running, serve_auth
from tests.support.faults import ThreadedAccountsSandbox
from tests.support.processes import free_port

# A key the sandbox refuses: "someone else's" key, or a typo.
OTHER_KEY = "dsk_live_OTHER_00112233445566778899aa"
# A second account the sandbox knows, with its own balance and history (the canary's balance is 205).
SECOND_KEY = "dsk_live_SECOND_a1b2c3d4e5f60718293a"
SECOND_BALANCE = 1205


def second_account() -> SandboxAccount:
    account = SandboxAccount()
    last = account.ledger[-1]
    account.ledger.append(
        {
            "type": "Purchase",
            "credits_delta": 1000,
            "balance_after": last["balance_after"] + 1000,
            "usd_amount": 100.0,
            "description": "Credit purchase (second account)",
            "at": "2026-05-20T08:00:00.000Z",
        }
    )
    assert account.balance()["credits_balance"] == SECOND_BALANCE
    return account


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster; `database()` makes a fresh database and returns its URL."""

    bindir: Path
    datadir: Path
    port: int
    run_as: list[str]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.run_as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir.parent / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.datadir.parent} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")

    def database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "dessert", name)
        return f"postgresql://dessert@127.0.0.1:{self.port}/{name}"


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run `make auth-deps` (apt-get install postgresql).")
    return Path(found[-1]).parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="dessert-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: hand the directory to the postgres system user (Debian's package makes it).
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    datadir = root / "data"
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "dessert",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pg = Postgres(bindir=bindir, datadir=datadir, port=free_port(), run_as=run_as)
    pg.start()
    try:
        yield pg
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'auth.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.database()


@pytest.fixture(scope="session")
def encryption_key() -> str:
    return generate_encryption_key()


@pytest.fixture(scope="module")
def canary_api() -> Iterator[ThreadedAccountsSandbox]:
    """The Dessert sandbox with two accounts: the canary key's (the default, balance 205) and SECOND_KEY's."""
    with ThreadedAccountsSandbox({CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account()}) as sb:
        yield sb


@pytest.fixture(scope="module")
def oauth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite file behind `oauth_server`."""
    return tmp_path_factory.mktemp("oauth") / "auth.db"


@pytest.fixture(scope="module")
def oauth_server(canary_api: ThreadedAccountsSandbox, oauth_db: Path, encryption_key: str) -> Iterator[Running]:
    """One `--auth oauth` server for a test module, on `oauth_db`, with `canary_api` as Dessert."""
    with serve_auth(
        "oauth", dessert_url=canary_api.url, database_url=f"sqlite:///{oauth_db}", encryption_key=encryption_key
    ) as running:
        yield running


@pytest.fixture
async def oauth_flow(oauth_server: Running) -> AsyncIterator[FlowClient]:
    async with httpx2.AsyncClient(timeout=60) as http:
        yield FlowClient(http, oauth_server.url)
