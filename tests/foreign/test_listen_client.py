"""A second, independent 2026-07-28 client hears the live resources: the official TypeScript SDK's Client
(@modelcontextprotocol/client, installed in .tools/ with the MCP Inspector), through subscriptions/listen, over stdio
and over streamable HTTP (stateless, the default). The change it hears is its own call's: the poller is off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_env, sandbox_settings, serve_app

SCRIPT = Path(__file__).with_name("listen_client.mjs")
LIVE = ["dessert://balance", "dessert://usage"]
WAIT_S = 120  # a bound that holds on a busy machine: the script exits once it heard the event


def listen(node: Path, env: dict[str, str], *target: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(node), str(SCRIPT), *target], env=env, capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    heard: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return heard


def expect(heard: dict[str, Any]) -> None:
    assert heard["era"] == "modern"  # 2026-07-28, not the handshake era
    assert heard["honored"] == {"resourceSubscriptions": LIVE}
    assert heard["called"] is True
    assert heard["method"] == "notifications/resources/updated"
    assert heard["uri"] in LIVE


def test_the_typescript_sdk_client_hears_resources_updated_through_listen_over_stdio(
    node: Path, sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    env = sandbox_env(sandbox, DESSERT_LEDGER_POLL="off", XDG_DATA_HOME=str(tmp_path), HOME=str(tmp_path))
    expect(listen(node, env, "stdio", sys.executable, "-m", "dessert_mcp"))


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_the_typescript_sdk_client_hears_resources_updated_through_listen_over_streamable_http(
    node: Path, sandbox: ThreadedFaultySandbox, tmp_path: Path, stateful: bool
) -> None:
    settings = sandbox_settings(sandbox, ledger_poll=False)
    with serve_app(build_app(settings, HTTPOptions(stateful=stateful))) as url:
        expect(listen(node, sandbox_env(sandbox, HOME=str(tmp_path)), "http", url + "/mcp"))
