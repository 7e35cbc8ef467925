"""The README's MCP Inspector lines, run as written: the machine's own `npx` and Node, the npm registry, a shell.

Inspector 2 needs Node >= 22.19; the README's lines bring Node 22 along (`-p node@22`), so they are run with the
Node the machine has (Debian's 20 here), from the directory a reader would be in: anywhere for bare `dessert-mcp`
(on PATH, as after pipx), the clone for `.venv/bin/dessert-mcp`. npm's cache lives in .cache/npm, so only the first
run downloads. `make inspector` runs too: the pinned copy in .tools/.

The CLI lines run to completion. The web UI lines are started headless on 127.0.0.1 (fixed free ports, no browser):
the test fetches the page the browser would load, checks the server the command line registered, and drives that
server through the Inspector's own proxy API (`/api/mcp/connect`, `/send`, `/events`) with the requests the UI
sends: initialize, tools/list, tools/call. What it cannot cover is the React app in a browser (rendering, clicks).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.processes import free_ports, printed, started

ROOT = Path(__file__).resolve().parents[2]
NPX = "npx -y -p node@22 -p @modelcontextprotocol/inspector@2 inspector "
NPM_CACHE = ROOT / ".cache" / "npm"
START_TIMEOUT_S = 240  # the first run downloads Node 22 and the Inspector
VENV_COMMAND = ".venv/bin/dessert-mcp"
# The venv running these tests: .venv for `make test`, .venv-lowest for `make test-lowest`.
TEST_VENV = Path(sys.prefix).relative_to(ROOT) if Path(sys.prefix).is_relative_to(ROOT) else Path(".venv")


def readme_section() -> str:
    return (ROOT / "README.md").read_text().split("\n## MCP Inspector\n", 1)[1].split("\n## ", 1)[0]


def readme_lines() -> list[str]:
    return [line for line in readme_section().splitlines() if line.startswith((NPX, "make inspector"))]


def shell_env(home: Path) -> dict[str, str]:
    """A login shell's environment, with dessert-mcp on PATH as after pipx; the Inspector's state under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "MCP_", "npm_"))}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env | {
        "PATH": path,
        "HOME": str(home),
        "npm_config_cache": str(NPM_CACHE),
        "npm_config_update_notifier": "false",
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "NO_COLOR": "1",
    }


def cwd_for(line: str, home: Path) -> Path:
    return ROOT if VENV_COMMAND in line or line.startswith("make ") else home


def test_the_readme_has_ui_and_cli_lines_for_an_installed_and_a_cloned_dessert_mcp() -> None:
    lines = readme_lines()
    assert f"{NPX}dessert-mcp --sandbox" in lines
    assert sum("--cli" in line for line in lines) == 3
    assert any(VENV_COMMAND in line for line in lines)
    assert "make inspector" in lines
    section = readme_section()
    for needed in ("Node", "22", "PATH", "-y"):
        assert needed in section, needed


def test_the_machine_npx_is_the_one_the_readme_means() -> None:
    npx = shutil.which("npx")
    assert npx, "npx is missing: install Node.js and npm (apt-get install npm)"
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v"), version  # any Node: the lines bring Node 22 themselves


@pytest.mark.parametrize(
    "line", [pytest.param(line, id=line.removeprefix(NPX)) for line in readme_lines() if "--cli" in line]
)
def test_the_readme_cli_lines_work_against_the_sandbox(tmp_path: Path, line: str) -> None:
    result = subprocess.run(
        ["sh", "-c", line],
        env=shell_env(tmp_path),
        cwd=cwd_for(line, tmp_path),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    if "tools/list" in line:
        assert [t["name"] for t in data["tools"]] == ["dessert_get_balance", "dessert_get_usage", "dessert_get_spend"]
    else:
        assert data.get("isError") is not True
        assert data["structuredContent"]["credits_balance"] == 205


@pytest.fixture(params=[line for line in readme_lines() if "--cli" not in line])
def inspector_ui(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """One README line that opens the web UI, running; yields (the line, base URL, session token) from its output."""
    line: str = request.param
    ui_port, sandbox_port, app_port = free_ports(3)
    env = shell_env(tmp_path) | {
        "HOST": "127.0.0.1",
        "CLIENT_PORT": str(ui_port),
        "MCP_SANDBOX_PORT": str(sandbox_port),
        "MCP_APP_ORIGIN_PORT": str(app_port),
        "MCP_AUTO_OPEN_ENABLED": "false",
    }
    # make: the stamps are up to date by construction here (pytest runs from that venv); never rebuild mid-test.
    command = line.replace("make ", f"make -s VENV={TEST_VENV} -o {TEST_VENV}/.installed -o .tools/.installed ", 1)
    log = tmp_path / "inspector.log"
    # The whole tree (sh, make, npx, node) is one process group, stopped with it.
    with started(
        ["sh", "-c", command],
        env=env,
        ready=printed(r"Auth token: \S+"),
        log=log,
        group=True,
        timeout_s=START_TIMEOUT_S,
        cwd=cwd_for(line, tmp_path),
    ) as inspector:
        printed_text = inspector.output()
        found = re.search(r"Auth token: (\S+)", printed_text)
        assert found, "the Inspector printed no session token:\n" + printed_text
        token = found.group(1)
        url = f"http://127.0.0.1:{ui_port}"
        assert f"{url}?MCP_INSPECTOR_API_TOKEN={token}" in printed_text
        yield line, url, token


def test_the_readme_ui_lines_serve_the_inspector_and_its_proxy_reaches_both_tools(
    inspector_ui: tuple[str, str, str],
) -> None:
    line, url, token = inspector_ui
    headers = {"x-mcp-remote-auth": f"Bearer {token}", "origin": url}  # what the page's own requests carry
    with httpx2.Client(base_url=url, headers=headers, timeout=60) as http:
        page = http.get("/", params={"MCP_INSPECTOR_API_TOKEN": token})
        assert page.status_code == 200
        assert "__INSPECTOR_API_TOKEN__" in page.text  # the UI, with the session token handed to it

        assert http.get("/api/servers", headers={"x-mcp-remote-auth": "Bearer wrong"}).status_code == 401
        servers = http.get("/api/servers").json()["mcpServers"]
        (server,) = servers.values()
        expected = str(ROOT / TEST_VENV / "bin" / "dessert-mcp") if line.startswith("make ") else "dessert-mcp"
        assert (server["command"], server["args"]) == (expected, ["--sandbox"])
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
    assert [t["name"] for t in answers[2]["result"]["tools"]] == [
        "dessert_get_balance",
        "dessert_get_usage",
        "dessert_get_spend",
    ]
    assert answers[3]["result"]["structuredContent"]["credits_balance"] == 205
