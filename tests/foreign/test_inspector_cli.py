"""The official MCP Inspector CLI (2.x) against dessert-mcp over stdio, SSE and streamable HTTP (both eras)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.faults import ThreadedFaultySandbox
from tests.support.measured import user_dirs_env

WRONG_KEY = "dsk_wrong_0000000000000000000000"
# SSE predates the 2026-07-28 era, so it is tried with the handshake only.
TARGETS = ["stdio-handshake", "stdio-modern", "sse", "http-handshake", "http-handshake-stateless", "http-modern"]

Run = Callable[..., subprocess.CompletedProcess[str]]


def target_args(target: str, serve: Callable[..., str], sandbox: ThreadedFaultySandbox, key: str) -> list[str]:
    """How the Inspector reaches the server for this target (starting an HTTP server when needed)."""
    era = "modern" if target.endswith("modern") else "legacy"
    if target.startswith("stdio"):
        env = [f"DESSERT_API_KEY={key}", f"DESSERT_API_BASE_URL={sandbox.url}", "DESSERT_MCP_LOG_LEVEL=WARNING"]
        env.append("DESSERT_MCP_TOOL_NAMES=dotted")  # the documented names, as the HTTP targets' servers list them
        # The Inspector passes a server only HOME and a few more: its ledger goes to the session's temporary dirs.
        env += [f"{k}={v}" for k, v in user_dirs_env().items()]
        opts = [a for e in env for a in ("-e", e)]
        return [*opts, "--protocol-era", era, "--", sys.executable, "-m", "dessert_mcp"]
    if target == "sse":
        return ["--transport", "sse", "--server-url", serve(transport="sse", key=key) + "/sse"]
    url = serve(stateful=not target.endswith("stateless"), key=key) + "/mcp"
    return ["--transport", "http", "--server-url", url, "--protocol-era", era]


def inspect(run_node: Run, target: list[str], *args: str) -> tuple[int, Any, str]:
    # Options first, then the stdio command after `--`.
    split = target.index("--") if "--" in target else len(target)
    result = run_node("inspector", "--cli", *target[:split], "--format", "json", *args, *target[split:])
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else None
    except json.JSONDecodeError:
        data = None
    return result.returncode, data, result.stdout + result.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_the_inspector_lists_and_calls_both_tools(
    run_node: Run, serve: Callable[..., str], sandbox: ThreadedFaultySandbox, target: str
) -> None:
    where = target_args(target, serve, sandbox, sandbox.key)

    code, data, output = inspect(run_node, where, "--method", "tools/list")
    assert code == 0, output
    assert {t["name"] for t in data["result"]["tools"]} == {
        "dessert.get_balance",
        "dessert.get_usage",
        "dessert.get_spend",
    }

    code, data, output = inspect(run_node, where, "--method", "tools/call", "--tool-name", "dessert.get_balance")
    assert code == 0, output
    assert data["result"].get("isError") is not True
    assert json.loads(data["result"]["content"][0]["text"])["credits_balance"] == 205
    if target.endswith("modern"):  # 2026-07-28 results carry the server's identity in _meta, handshake ones do not
        assert data["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "dessert-mcp"
    else:
        assert "io.modelcontextprotocol/serverInfo" not in data["result"].get("_meta", {})

    code, data, output = inspect(
        run_node, where, "--method", "tools/call", "--tool-name", "dessert.get_usage", "--tool-arg", "limit=2"
    )
    assert code == 0, output
    assert len(json.loads(data["result"]["content"][0]["text"])["recent_transactions"]) == 2


@pytest.mark.parametrize("target", TARGETS)
def test_the_inspector_exits_non_zero_when_a_tool_fails(
    run_node: Run, serve: Callable[..., str], sandbox: ThreadedFaultySandbox, target: str
) -> None:
    where = target_args(target, serve, sandbox, WRONG_KEY)
    code, _, output = inspect(run_node, where, "--method", "tools/call", "--tool-name", "dessert.get_balance")
    assert code != 0, output
    assert "rejected the API key" in output
    assert WRONG_KEY not in output
