"""The tool surface (names, titles, descriptions, annotations, schemas) is snapshotted on purpose.

A change fails here until the snapshot is regenerated deliberately:
    DESSERT_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_tool_surface.py
and the diff of tests/snapshots/tool_surface.json is reviewed with the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mcp import Client

from dessert_mcp.config import Settings
from dessert_mcp.tools import build_server

SNAPSHOT = Path(__file__).parent / "snapshots" / "tool_surface.json"
# The surface before the ledger, kept: DESSERT_LEDGER=off must still show exactly this.
LEDGER_OFF_SNAPSHOT = Path(__file__).parent / "snapshots" / "tool_surface_ledger_off.json"


async def _surface(style: str, **env: str) -> list[dict[str, Any]]:
    server = build_server(Settings.from_env({"DESSERT_MCP_TOOL_NAMES": style, **env}))
    async with Client(server) as client:
        listed = await client.list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed.tools]


async def test_the_tool_surface_matches_the_reviewed_snapshot() -> None:
    current = {"dotted": await _surface("dotted"), "underscore": await _surface("underscore")}
    if os.environ.get("DESSERT_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, "tool surface changed: review it, then regenerate the snapshot (see module docstring)"


async def test_both_spellings_describe_the_same_tools() -> None:
    dotted, underscore = await _surface("dotted"), await _surface("underscore")
    for a, b in zip(dotted, underscore, strict=True):
        assert {**a, "name": None} == {**b, "name": None}


async def test_with_the_ledger_off_the_tools_are_the_ones_before_the_ledger() -> None:
    before = json.loads(LEDGER_OFF_SNAPSHOT.read_text())
    for style in ("dotted", "underscore"):
        current = await _surface(style, DESSERT_LEDGER="off")
        assert [{**t, "outputSchema": None} for t in current] == [{**t, "outputSchema": None} for t in before[style]]
        for now, then in zip(current, before[style], strict=True):  # results only gained fields (seams, next_cursor)
            assert set(then["outputSchema"]["properties"]) <= set(now["outputSchema"]["properties"])
