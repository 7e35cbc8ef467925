"""The README's promises that can drift from the code are checked here."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mcp import Client

from dessert_mcp import config
from dessert_mcp.config import Settings
from dessert_mcp.listing import TOOL_NAMES
from dessert_mcp.tools import build_server

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
START = "<!-- tools:start (generated from the code by tests/test_readme.py; DESSERT_UPDATE_SNAPSHOTS=1 rewrites it) -->"
END = "<!-- tools:end -->"


async def _tools_table() -> str:
    async with Client(build_server(Settings.from_env({"DESSERT_MCP_TOOL_NAMES": "dotted"}))) as client:
        tools = (await client.list_tools()).tools
    rows = ["| tool | portable name | title | arguments |", "| --- | --- | --- | --- |"]
    for tool in tools:
        props = list(tool.input_schema.get("properties", {}))
        required = tool.input_schema.get("required", [])
        args = ", ".join(f"`{p}`" for p in props) + (" (all optional)" if not required else "") if props else "none"
        rows.append(f"| `{tool.name}` | `{TOOL_NAMES[tool.name]}` | {tool.title} | {args} |")
    return "\n".join(rows)


async def test_the_readme_tools_section_is_generated_from_the_code() -> None:
    text = README.read_text()
    before, rest = text.split(START + "\n", 1)
    current, after = rest.split(END, 1)
    table = await _tools_table()
    if os.environ.get("DESSERT_UPDATE_SNAPSHOTS") == "1":
        README.write_text(f"{before}{START}\n{table}\n{END}{after}")
        current = table + "\n"
    assert current == table + "\n", "README tools section drifted; regenerate it (see tests/test_readme.py)"


def test_the_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("\n## ", 1)[0]
    assert "make demo" in head
    assert "make test" in head


def test_every_setting_the_code_reads_is_documented() -> None:
    names = set(re.findall(r'"(DESSERT_[A-Z_]+)"', Path(config.__file__).read_text()))
    assert names, "no settings found"
    readme = README.read_text()
    for name in sorted(names):
        assert f"`{name}`" in readme, f"{name} is read by config.py but missing from README.md"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
