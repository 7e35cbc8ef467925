"""A SQLite token database that goes bad under a running server: made immutable, deleted, or refusing writes.
Requests answer 503 with Retry-After, /readyz says why it is not ready, and the process lives on.

The servers run as subprocesses: when the file was in WAL mode, an immutable `auth.db-shm` killed the process with
SIGBUS, which must not take the test runner with it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from dessert_mcp.auth.store import StorageUnavailable, Store
from dessert_mcp.storage import database as storage_database
from tests.auth.test_serving import remote_env
from tests.support.api import CANARY_KEY
from tests.support.auth import FlowClient
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import free_port
from tests.support.servers import cli_process


@contextlib.contextmanager
def oauth_server(
    canary_api: ThreadedFaultySandbox, encryption_key: str, folder: Path, port: int | None = None
) -> Iterator[tuple[str, int]]:
    """`dessert-mcp --auth oauth` on a SQLite file in `folder`, every token checked against it (no token cache)."""
    port = port or free_port()
    env = remote_env(
        canary_api,
        DESSERT_MCP_PUBLIC_URL=f"http://127.0.0.1:{port}",
        DESSERT_MCP_ENCRYPTION_KEY=encryption_key,
        DESSERT_MCP_DATABASE_URL=f"sqlite:///{folder / 'auth.db'}",
        DESSERT_MCP_TOKEN_CACHE_S="0",
    )
    with cli_process(["--transport", "http", "--auth", "oauth"], env, folder / "server.log", port=port) as running:
        yield running


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """`chattr +i` on the paths that exist, undone on exit; skips where the filesystem or user cannot."""
    present = [str(p) for p in paths if p.exists()]
    done = subprocess.run(["chattr", "+i", *present], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.decode().strip()}")
    # Write the pages back, as the kernel does within 30 s: in WAL mode SQLite's next write to its mapped -shm then
    # faulted, and on an immutable file that fault is a SIGBUS.
    os.sync()
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *present], capture_output=True, check=False)  # undone already, or gone


def _chattr(flag: str, paths: tuple[Path, ...]) -> None:
    subprocess.run(["chattr", flag, *(str(p) for p in paths if p.exists())], check=True)


def _remove_database(folder: Path) -> None:
    for path in folder.glob("auth.db*"):
        path.unlink()


async def _signed_in(http: httpx2.AsyncClient, url: str) -> tuple[FlowClient, dict[str, object], dict[str, str]]:
    flow = FlowClient(http, url)
    client = await flow.register()
    tokens = await flow.tokens_for(client, CANARY_KEY)
    assert (await flow.call_tool(url + "/mcp", tokens["access_token"])).status_code == 200
    return flow, client, tokens


def _assert_unavailable(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0


@pytest.mark.parametrize("restart", [False, True], ids=["while-serving", "across-a-restart"])
async def test_an_immutable_database_answers_503_and_not_ready_and_the_process_lives_on(
    restart: bool, canary_api: ThreadedFaultySandbox, encryption_key: str, tmp_path: Path
) -> None:
    database = tmp_path / "auth.db"
    files = tuple(Path(f"{database}{suffix}") for suffix in ("", "-journal", "-wal", "-shm"))
    with contextlib.ExitStack() as stack:
        url, _pid = stack.enter_context(oauth_server(canary_api, encryption_key, tmp_path))
        async with httpx2.AsyncClient(timeout=30) as http:
            flow, client, tokens = await _signed_in(http, url)
        if restart:  # on the same port: the tokens name it
            stack.close()
            port = int(url.rsplit(":", 1)[1])
            url, _pid = stack.enter_context(oauth_server(canary_api, encryption_key, tmp_path, port))
        stack.enter_context(immutable(*files))
        async with httpx2.AsyncClient(timeout=30) as http:
            flow.http = http
            _assert_unavailable(await flow.refresh(client, tokens["refresh_token"]))  # writes
            _assert_unavailable(await http.post(url + "/register", json={"redirect_uris": ["http://x/cb"]}))
            _assert_unavailable(await flow.call_tool(url + "/mcp", tokens["access_token"]))  # a read
            ready = await http.get(url + "/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not ready", "reason": "database_read_only"}
            assert (await http.get(url + "/healthz")).status_code == 200
            _chattr("-i", files)
            assert (await http.get(url + "/readyz")).status_code == 200  # writable again: back by itself
            assert (await flow.call_tool(url + "/mcp", tokens["access_token"])).status_code == 200


async def test_a_deleted_database_file_is_not_written_into_and_readiness_says_so_once_in_the_log(
    canary_api: ThreadedFaultySandbox, encryption_key: str, tmp_path: Path
) -> None:
    with oauth_server(canary_api, encryption_key, tmp_path) as (url, _pid):
        async with httpx2.AsyncClient(timeout=30) as http:
            flow, client, tokens = await _signed_in(http, url)
            _remove_database(tmp_path)  # what `rm auth.db*` or a wiped volume does under the running server
            for _ in range(3):
                _assert_unavailable(await flow.call_tool(url + "/mcp", tokens["access_token"]))
                _assert_unavailable(await flow.refresh(client, tokens["refresh_token"]))
                ready = await http.get(url + "/readyz")
                assert ready.status_code == 503
                assert ready.json()["reason"] == "database_file_gone"
    log = (tmp_path / "server.log").read_text()
    assert log.count("was deleted or replaced while in use: refusing to use it") == 1


async def test_readiness_fails_while_writes_fail_even_though_reads_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_database, "SQLITE_BUSY_TIMEOUT_S", 0.1)
    database = tmp_path / "auth.db"
    store = Store(f"sqlite:///{database}")
    try:
        await store.migrate()
        await store.ping()
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock: readers go on, every other writer waits, then fails
        try:
            assert await store.throttle_count("k", window_s=60) == 0
            with pytest.raises(StorageUnavailable):
                await store.throttle_hit("k", window_s=60)
            with pytest.raises(StorageUnavailable) as refused:
                await store.ping()
            assert refused.value.reason == "database_read_only"
        finally:
            holder.rollback()
            holder.close()
        await store.ping()  # the writer is gone: ready again
        assert await store.throttle_hit("k", window_s=60) == 1
    finally:
        await store.aclose()
