"""The one module built on something the SDK does not offer publicly (dessert_mcp.listing): its assumptions pinned.

If the SDK changes under it, these tests fail first and say so, naming the module, instead of every host quietly
seeing four tools, dotted names or open argument objects.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.types import INVALID_PARAMS
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from dessert_mcp.config import Settings
from dessert_mcp.listing import TOOL_NAMES, run_stdio, tool_names_for, without_sdk_spans
from dessert_mcp.stdio import _Pending, _Stdin, _Stdout
from dessert_mcp.tools import build_server
from tests.support.api import FakeDessertAPI

CHANGED = "the SDK changed under dessert_mcp.listing (see its docstring): "


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_still_hands_middleware_what_listing_relies_on(mode: str) -> None:
    seen: dict[str, Any] = {}

    async def spy(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "tools/list":
            seen["result"] = result
            seen["request_id"] = ctx.request_id
        return result

    server: MCPServer[Any] = MCPServer("probe", middleware=[spy])

    @server.tool(name="probe.tool")
    async def probe(limit: int | None = None) -> str:
        return "ok"

    async with Client(server, mode=mode) as client:
        await client.list_tools()
    result = seen.get("result")
    assert isinstance(result, dict), CHANGED + f"middleware now gets {type(result).__name__}, not the wire dict"
    tools = result.get("tools")
    assert isinstance(tools, list), CHANGED + "the tools/list result has no 'tools' list"
    assert tools, CHANGED + "no tools listed"
    assert {"name", "inputSchema"} <= set(tools[0]), CHANGED + f"tool entries now look like {sorted(tools[0])}"
    assert seen["request_id"] is not None, CHANGED + "a tools/list request has no ctx.request_id"


async def test_the_trimmed_list_is_what_a_client_receives(fake_api: FakeDessertAPI) -> None:
    server = build_server(Settings.from_env({}), transport=fake_api.transport())
    async with Client(server) as client:
        listed = (await client.list_tools()).tools
    assert [t.name for t in listed] == list(TOOL_NAMES.values()), CHANGED + "the trimmed list did not reach the client"
    for tool in listed:
        assert tool.input_schema.get("additionalProperties") is False
        assert "title" not in tool.input_schema
        assert all("title" not in p and "default" not in p for p in tool.input_schema["properties"].values())


def test_auto_and_underscore_list_the_portable_twins_and_dotted_the_documented_names() -> None:
    assert tool_names_for("auto") == tool_names_for("underscore") == tuple(TOOL_NAMES.values())
    assert tool_names_for("dotted") == tuple(TOOL_NAMES)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_mcp_error_raised_in_middleware_reaches_the_client_as_raised(mode: str) -> None:
    seen: dict[str, Any] = {}

    async def refuse(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "prompts/get":
            seen["params"] = dict(ctx.params or {})
            raise MCPError(code=INVALID_PARAMS, message="refused")
        return await call_next(ctx)

    server: MCPServer[Any] = MCPServer("probe", middleware=[refuse])
    async with Client(server, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("anything")
    assert seen["params"].get("name") == "anything", CHANGED + "prompts/get params are no longer on ctx.params"
    assert (caught.value.error.code, caught.value.error.message) == (INVALID_PARAMS, "refused"), CHANGED + (
        "an MCPError raised in middleware no longer reaches the client unchanged"
    )


async def test_the_sdk_still_answers_an_unknown_prompt_with_its_compatibility_code() -> None:
    # When this fails the SDK answers -32602 itself: refuse_unknown_prompts can go.
    async with Client(MCPServer("probe")) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("missing")
    assert caught.value.error.code != INVALID_PARAMS


async def test_the_sdk_still_runs_an_mcpserver_on_stdio_streams_handed_to_it() -> None:
    server: MCPServer[Any] = MCPServer("probe")

    @server.tool(name="probe.tool")
    async def probe() -> str:
        return "ok"

    assert hasattr(server, "_lowlevel_server"), CHANGED + "MCPServer has no _lowlevel_server to run on given streams"
    requests = [
        {
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"method": "notifications/initialized"},
        {"id": 2, "method": "tools/call", "params": {"name": "probe.tool", "arguments": {}}},
    ]
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    os.write(write_in, b"".join(json.dumps({"jsonrpc": "2.0", **r}).encode() + b"\n" for r in requests))
    os.close(write_in)
    pending = _Pending()
    try:
        with anyio.fail_after(30):
            await run_stdio(server, _Stdin(read_in, pending, drain_timeout_s=30), _Stdout(write_out, pending))
        os.close(write_out)
        answers = [json.loads(line) for line in os.read(read_out, 1 << 16).splitlines()]
    finally:
        os.close(read_in)
        os.close(read_out)
    assert [a.get("id") for a in answers] == [1, 2], CHANGED + f"run on given streams, it answered {answers}"
    assert answers[1]["result"]["content"][0]["text"] == "ok", CHANGED + "the tool's answer did not come back"


def test_the_sdk_still_ships_its_span_middleware_where_without_sdk_spans_takes_it_off() -> None:
    from mcp.server._otel import OpenTelemetryMiddleware  # where the SDK's OpenTelemetry page says it is

    async def ours(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        return await call_next(ctx)

    server: MCPServer[Any] = MCPServer("probe", middleware=[ours])
    assert isinstance(server.middleware[0], OpenTelemetryMiddleware), CHANGED + "no span middleware first in the list"
    assert sum(isinstance(m, OpenTelemetryMiddleware) for m in server.middleware) == 1
    kept = [m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    without_sdk_spans(server)
    assert server.middleware == kept
    assert ours in server.middleware
