"""What `dessert-mcp --auth oauth` writes to its log at DEBUG, the most it ever writes: never a sign-in's `request`
id (a capability for the rest of that sign-in), a sealed key, a key hash or a token hash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx2

from tests.auth.test_serving import remote_env
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import FlowClient, call_tool, pkce
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import free_port
from tests.support.servers import cli_server


def _stored_secrets(database: Path) -> list[str]:
    """Every value the database holds that a log must not: sealed keys, key and token hashes, sign-in id hashes."""
    with sqlite3.connect(database) as db:
        rows = [
            *db.execute("SELECT key_sealed, key_hash FROM accounts"),
            *db.execute("SELECT token_hash FROM access_tokens"),
            *db.execute("SELECT token_hash FROM refresh_tokens"),
            *db.execute("SELECT code_hash FROM authorization_codes"),
            *db.execute("SELECT id_hash, csrf_hash FROM sign_ins"),
        ]
    values = [value for row in rows for value in row if value]
    assert len(values) >= 7
    return values


async def test_a_debug_log_of_a_whole_sign_in_holds_no_request_id_sealed_key_or_hash(
    canary_api: ThreadedFaultySandbox, encryption_key: str, tmp_path: Path
) -> None:
    port = free_port()
    database = tmp_path / "auth.db"
    env = remote_env(  # DEBUG: the access log, the SDK's and the database drivers' loggers all on
        canary_api,
        DESSERT_MCP_PUBLIC_URL=f"http://127.0.0.1:{port}",
        DESSERT_MCP_ENCRYPTION_KEY=encryption_key,
        DESSERT_MCP_DATABASE_URL=f"sqlite:///{database}",
    )
    log = tmp_path / "server.log"
    with cli_server(["--transport", "http", "--auth", "oauth"], env, log, port=port) as url:
        async with httpx2.AsyncClient(timeout=30) as http:
            flow = FlowClient(http, url)
            client = await flow.register()
            verifier, challenge = pkce()
            request_id, csrf = await flow.sign_in_page(await flow.authorize(client, challenge))
            assert (await flow.submit_key(request_id, csrf, CANARY_KEY)).status_code == 200
            done = await flow.consent(request_id, csrf)
            code = done.headers["location"].split("code=", 1)[1].split("&", 1)[0]
            tokens = (await flow.exchange(client, code, verifier)).json()
            refreshed = (await flow.refresh(client, tokens["refresh_token"])).json()
        result = await call_tool(url + "/mcp", refreshed["access_token"])
        assert result.structured_content["credits_balance"] == 205
    text = log.read_text()
    assert "GET /signin?request=[REDACTED] HTTP/1.1" in text  # the access log is on, and masks the id
    assert " sqlalchemy.engine" not in text  # the drivers' statement logs stay off
    assert " aiosqlite:" not in text
    for secret in (request_id, csrf, code, tokens["access_token"], tokens["refresh_token"], *_stored_secrets(database)):
        assert_no_secret(text, secret)
    assert_no_secret(text, CANARY_KEY)
