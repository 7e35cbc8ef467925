"""The README's MCP Inspector lines, run as written (`npx @modelcontextprotocol/inspector` = the pinned install).

The CLI lines run to completion. The web UI line is started headless on 127.0.0.1 (fixed free ports, no browser):
the test fetches the page the browser would load, checks the server the command line registered, and drives that
server through the Inspector's own proxy API (`/api/mcp/connect`, `/send`, `/events`) with the requests the UI
sends: initialize, tools/list, tools/call. What it cannot cover is the React app in a browser (rendering, clicks).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "node_modules" / ".bin"
NPX_PREFIX = "npx @modelcontextprotocol/inspector "
START_TIMEOUT_S = 60


def readme_lines() -> list[str]:
    section = (ROOT / "README.md").read_text().split("\n## MCP Inspector\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith(NPX_PREFIX)]


def inspector_argv(node: Path, line: str) -> list[str]:
    return [str(node), str(BIN / "inspector"), *shlex.split(line.removeprefix(NPX_PREFIX))]


def inspector_env(home: Path) -> dict[str, str]:
    """dessert-mcp and node on PATH as after `pip install` and `npx`; the Inspector's state under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "MCP_"))}
    path = os.pathsep.join([str(Path(sys.executable).parent), str(BIN), env.get("PATH", "")])
    return env | {"PATH": path, "HOME": str(home), "MCP_INSPECTOR_SECRET_STORE": "memory", "NO_COLOR": "1"}


def test_the_readme_has_the_ui_line_and_cli_lines() -> None:
    lines = readme_lines()
    assert "npx @modelcontextprotocol/inspector dessert-mcp --sandbox" in lines
    assert sum("--cli" in line for line in lines) == 2


@pytest.mark.parametrize(
    "line", [pytest.param(line, id=line.split("--method ")[-1]) for line in readme_lines() if "--cli" in line]
)
def test_the_readme_cli_lines_work_against_the_sandbox(node: Path, tmp_path: Path, line: str) -> None:
    result = subprocess.run(
        inspector_argv(node, line),
        env=inspector_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    if "tools/list" in line:
        assert [t["name"] for t in data["tools"]] == ["dessert.get_balance", "dessert.get_usage"]
    else:
        assert data.get("isError") is not True
        assert data["structuredContent"]["credits_balance"] == 205


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def inspector_ui(node: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The README's UI line, running; yields (base URL, session token) from what it prints."""
    (line,) = [line for line in readme_lines() if "--cli" not in line]
    ui_port, sandbox_port, app_port = free_ports(3)
    env = inspector_env(tmp_path) | {
        "HOST": "127.0.0.1",
        "CLIENT_PORT": str(ui_port),
        "MCP_SANDBOX_PORT": str(sandbox_port),
        "MCP_APP_ORIGIN_PORT": str(app_port),
        "MCP_AUTO_OPEN_ENABLED": "false",
    }
    proc = subprocess.Popen(
        inspector_argv(node, line),
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(START_TIMEOUT_S, proc.kill)  # a start that never prints its token fails, not hangs
    watchdog.start()
    printed: list[str] = []
    token = None
    assert proc.stdout is not None
    for output in proc.stdout:
        printed.append(output)
        if found := re.search(r"Auth token: (\S+)", output):
            token = found.group(1)
            break
    watchdog.cancel()
    try:
        assert token, "the Inspector printed no session token:\n" + "".join(printed)
        url = f"http://127.0.0.1:{ui_port}"
        assert f"{url}?MCP_INSPECTOR_API_TOKEN={token}" in "".join(printed)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_the_readme_ui_line_serves_the_inspector_and_its_proxy_reaches_both_tools(
    inspector_ui: tuple[str, str],
) -> None:
    url, token = inspector_ui
    headers = {"x-mcp-remote-auth": f"Bearer {token}", "origin": url}  # what the page's own requests carry
    with httpx2.Client(base_url=url, headers=headers, timeout=60) as http:
        page = http.get("/", params={"MCP_INSPECTOR_API_TOKEN": token})
        assert page.status_code == 200
        assert "__INSPECTOR_API_TOKEN__" in page.text  # the UI, with the session token handed to it

        assert http.get("/api/servers", headers={"x-mcp-remote-auth": "Bearer wrong"}).status_code == 401
        servers = http.get("/api/servers").json()["mcpServers"]
        (server,) = servers.values()
        assert (server["command"], server["args"]) == ("dessert-mcp", ["--sandbox"])
        environment = http.get("/api/config").json()["defaultEnvironment"]

        connected = http.post("/api/mcp/connect", json={"config": server | {"env": environment}})
        assert connected.status_code == 200, connected.text
        session = connected.json()["sessionId"]

        def send(message: dict[str, Any]) -> None:
            answer = http.post("/api/mcp/send", json={"sessionId": session, "message": message})
            assert answer.json() == {"ok": True}, answer.text

        send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "inspector-test", "version": "0"},
                },
            }
        )
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
        send(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "dessert.get_balance", "arguments": {}},
            }
        )

        # The answers wait in the session's event queue until the page's event stream reads them.
        answers: dict[int, dict[str, Any]] = {}
        with http.stream("GET", "/api/mcp/events", params={"sessionId": session}) as events:
            for raw in events.iter_lines():
                if not raw.startswith("data:"):
                    continue
                event = json.loads(raw.removeprefix("data:"))
                message = event.get("data", {})
                if event.get("type") == "message" and message.get("id") in (1, 2, 3):
                    answers[message["id"]] = message
                if len(answers) == 3:
                    break
        http.post("/api/mcp/disconnect", json={"sessionId": session})

    assert answers[1]["result"]["serverInfo"]["name"] == "dessert-mcp"
    assert [t["name"] for t in answers[2]["result"]["tools"]] == ["dessert.get_balance", "dessert.get_usage"]
    assert answers[3]["result"]["structuredContent"]["credits_balance"] == 205
