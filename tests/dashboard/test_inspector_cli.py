"""The MCP Inspector CLI (2.12) sees the dashboard as an MCP App on both tools and reads its resource, over stdio."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dessert_mcp.dashboard import DASHBOARD_URI, dashboard_html
from dessert_mcp.listing import tool_names_for
from tests.support.inspector import DESSERT_MCP, TOOLS_BIN, clean_env

TOOLS = list(tool_names_for("auto"))  # what the default lists; the Inspector calls only listed names


def inspector_cli(node: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(home) | {"MCP_INSPECTOR_SECRET_STORE": "memory"}
    return subprocess.run(
        [str(node), str(TOOLS_BIN / "inspector"), "--cli", str(DESSERT_MCP), "--sandbox", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_the_inspector_reports_the_app_on_both_tools(node22: Path, tmp_path: Path) -> None:
    listed = inspector_cli(node22, tmp_path, "--method", "tools/list", "--app-info")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    infos = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert [info["toolName"] for info in infos] == TOOLS
    for info in infos:
        assert info["hasApp"] is True
        assert info["resourceUri"] == DASHBOARD_URI
        assert info["resourceMimeType"] == "text/html;profile=mcp-app"
        assert info["csp"] == {"connectDomains": [], "resourceDomains": []}


def test_the_inspector_probes_each_tool_call_as_an_app(node22: Path, tmp_path: Path) -> None:
    for tool in TOOLS:
        probed = inspector_cli(node22, tmp_path, "--method", "tools/call", "--tool-name", tool, "--app-info")
        assert probed.returncode == 0, probed.stdout + probed.stderr  # 2 would mean "no app"
        assert json.loads(probed.stdout)["resourceUri"] == DASHBOARD_URI


def test_the_inspector_reads_the_page_resource(node22: Path, tmp_path: Path) -> None:
    read = inspector_cli(node22, tmp_path, "--method", "resources/read", "--uri", DASHBOARD_URI)
    assert read.returncode == 0, read.stdout + read.stderr
    (content,) = json.loads(read.stdout)["contents"]
    assert content["mimeType"] == "text/html;profile=mcp-app"
    assert content["text"] == dashboard_html()
    assert content["_meta"]["ui"]["csp"] == {"connectDomains": [], "resourceDomains": []}
