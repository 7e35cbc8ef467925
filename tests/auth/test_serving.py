"""`dessert-mcp --transport http --auth ...` as a real process: what it refuses, what it leaves unimported, and
both tools for two callers over two worker processes that each build their own wiring."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.auth.conftest import OTHER_KEY, SECOND_BALANCE, SECOND_KEY
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import FlowClient, call_tool
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import free_port
from tests.support.servers import cli_server, worker_pids


def remote_env(sandbox: ThreadedFaultySandbox | None = None, **extra: str) -> dict[str, str]:
    """This environment without the caller's DESSERT_* variables (so without DESSERT_API_KEY)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    if sandbox is not None:
        env |= {"DESSERT_API_BASE_URL": sandbox.url, "DESSERT_MCP_TOOL_NAMES": "dotted"}
    return env | {"DESSERT_MCP_LOG_LEVEL": "DEBUG"} | extra


def run_cli(*args: str, env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["-c", code] if code else ["-m", "dessert_mcp"]
    return subprocess.run([sys.executable, *command, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        pytest.param(
            ["--transport", "http", "--auth", "dessert-key"],
            {"DESSERT_API_KEY": CANARY_KEY},
            "with --auth each caller uses their own Dessert key; a caller without one must get 401, never the "
            "operator's account",
            id="operator-key-dessert-key",
        ),
        pytest.param(
            ["--transport", "http", "--auth", "oauth", "--public-url", "https://mcp.example.com"],
            {"DESSERT_API_KEY": CANARY_KEY},
            "never the operator's account",
            id="operator-key-oauth",
        ),
        pytest.param(["--auth", "dessert-key"], {}, "--auth applies to the HTTP transports only", id="stdio"),
        pytest.param(
            ["--transport", "sse", "--auth", "dessert-key"], {}, "--auth applies to --transport http only", id="sse"
        ),
        pytest.param(
            ["--transport", "http", "--auth", "dessert-key"],
            {"DESSERT_MCP_AUTH_TOKEN": "a-server-token-of-our-own"},
            "unset DESSERT_MCP_AUTH_TOKEN",
            id="server-token",
        ),
        pytest.param(["--transport", "http", "--auth", "oauth"], {}, "needs --public-url", id="no-public-url"),
        pytest.param(
            ["--transport", "http", "--auth", "oauth", "--public-url", "http://mcp.example.com"],
            {"DESSERT_MCP_ENCRYPTION_KEY": "x" * 43},
            "OAuth needs https outside loopback",
            id="plain-http-public-url",
        ),
        pytest.param(
            ["--transport", "http", "--auth", "oauth", "--public-url", "https://mcp.example.com"],
            {},
            "needs DESSERT_MCP_ENCRYPTION_KEY",
            id="no-encryption-key",
        ),
        pytest.param(
            ["--transport", "http", "--public-url", "https://mcp.example.com"],
            {},
            "--public-url applies to --auth oauth only",
            id="public-url-alone",
        ),
    ],
)
def test_auth_command_lines_that_cannot_work_refuse_to_start_and_say_why(
    args: list[str], extra_env: dict[str, str], message: str
) -> None:
    result = run_cli(*args, env=remote_env(**extra_env))
    assert result.returncode != 0
    assert message in result.stderr
    assert_no_secret(result.stderr + result.stdout)


def test_without_the_remote_extra_oauth_refuses_in_one_line_naming_the_install_command() -> None:
    blocked = "import sys; sys.modules['sqlalchemy'] = None; from dessert_mcp.cli import main; main(sys.argv[1:])"
    args = ["--transport", "http", "--auth", "oauth", "--public-url", "https://mcp.example.com"]
    result = run_cli(*args, env=remote_env(), code=blocked)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "pip install 'dessert-mcp[remote]'" in result.stderr


def test_stdio_and_plain_http_leave_the_token_store_unimported() -> None:
    code = (
        "import sys\n"
        "from dessert_mcp.config import Settings\n"
        "from dessert_mcp.http import HTTPOptions\n"
        "from dessert_mcp.http.app import build_app\n"
        "from dessert_mcp.stdio import serve_stdio\n"
        "build_app(Settings(), HTTPOptions())\n"
        "build_app(Settings(), HTTPOptions(auth='dessert-key'))\n"
        "loaded = {m.split('.')[0] for m in sys.modules} | set(sys.modules)\n"
        "heavy = {'sqlalchemy', 'aiosqlite', 'asyncpg', 'dessert_mcp.auth.store', 'dessert_mcp.auth._crypto'}\n"
        "print(sorted(heavy & loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    # (cryptography itself is the SDK's: mcp.server.request_state imports it with MCPServer.)
    assert result.stdout.strip() == "[]"


# Rounds of calls until both workers have answered: each call opens new connections, which the kernel spreads over
# the workers' sockets at random, so one round nearly always does; the bound only stops a broken server looping.
ROUNDS = 10


async def serve_both_callers_until_both_workers_answered(mcp_url: str, log: Path, tokens: dict[str, str]) -> None:
    """Both tools for each caller, in rounds, until the log shows two worker pids; fails if it never does."""
    pids: set[str] = set()
    for _ in range(ROUNDS):
        for key, balance in ((CANARY_KEY, 205), (SECOND_KEY, SECOND_BALANCE)):
            result = await call_tool(mcp_url, tokens[key])
            assert result.structured_content["credits_balance"] == balance
            usage = await call_tool(mcp_url, tokens[key], "dessert.get_usage", limit=1)
            assert usage.structured_content["recent_transactions"][0]["balance_after"] == balance
        pids = worker_pids(log)
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"every call landed on worker {pids}"


@pytest.fixture(scope="module")
def dessert_key_server(
    canary_api: ThreadedFaultySandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("dessert-key") / "server.log"
    args = ["--transport", "http", "--auth", "dessert-key", "--workers", "2"]
    with cli_server(args, remote_env(canary_api), log) as url:
        yield url, log
    assert_no_secret(log.read_text())
    assert_no_secret(log.read_text(), SECOND_KEY)


async def test_dessert_mcp_with_auth_dessert_key_serves_both_tools_to_each_caller_over_two_workers(
    dessert_key_server: tuple[str, Path],
) -> None:
    url, log = dessert_key_server
    mcp_url = url + "/mcp"
    await serve_both_callers_until_both_workers_answered(mcp_url, log, {key: key for key in (CANARY_KEY, SECOND_KEY)})
    refused = await call_tool(mcp_url, OTHER_KEY)
    assert refused.is_error
    assert "auth_invalid" in refused.content[0].text
    async with httpx2.AsyncClient() as http:
        anonymous = await http.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert anonymous.status_code == 401
        assert (await http.get(url + "/readyz")).status_code == 200


async def test_dessert_mcp_with_auth_oauth_links_two_accounts_and_serves_both_tools_over_two_workers(
    canary_api: ThreadedFaultySandbox, encryption_key: str, tmp_path: Path
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = remote_env(
        canary_api,
        DESSERT_MCP_PUBLIC_URL=public,  # the variable, this time, instead of --public-url
        DESSERT_MCP_ENCRYPTION_KEY=encryption_key,
        DESSERT_MCP_DATABASE_URL=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    args = ["--transport", "http", "--auth", "oauth", "--workers", "2"]
    with cli_server(args, env, tmp_path / "server.log", port=port) as url:
        async with httpx2.AsyncClient(timeout=30) as http:
            flow = FlowClient(http, url)
            client = await flow.register()
            tokens = {key: (await flow.tokens_for(client, key))["access_token"] for key in (CANARY_KEY, SECOND_KEY)}
            assert (await http.get(url + "/readyz")).json() == {"status": "ready"}
            assert (await flow.call_tool(url + "/mcp", "not-a-token")).status_code == 401
        await serve_both_callers_until_both_workers_answered(url + "/mcp", tmp_path / "server.log", tokens)
    logs = (tmp_path / "server.log").read_text()
    assert f"Connector URL for claude.ai and ChatGPT: {public}/mcp" in logs
    for key in (CANARY_KEY, SECOND_KEY):
        assert_no_secret(logs + "\n".join(flow.seen), key)
