"""A real PostgreSQL for the tests that need one (Debian's binaries, a throw-away cluster on 127.0.0.1), and the
`database_url` fixture that runs a test on SQLite and on PostgreSQL."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import free_port


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
