"""What `tools/list` shows each client (one spelling of each tool name, closed argument objects), and the server
run on stdio streams of our own.

This is the one place dessert-mcp builds on something the SDK does not offer publicly. The SDK has no per-client
tool listing and no way to declare a tool's arguments closed (`additionalProperties: false`), so a middleware
(a provisional API: "observe and refuse") trims the finished `tools/list` result. And `MCPServer` serves stdio only on
the process's own streams, so `run_stdio` hands `stdio_server` ours (see dessert_mcp.stdio) and runs MCPServer's
private low-level server on them. Everything else stands on documented API. `tests/test_listing.py` fails, naming
this module, if the SDK changes what this relies on: the middleware signature, `ctx.method`, `ctx.request_id`,
`ctx.session.client_params`, the result handed back as a wire-form dict, `MCPServer._lowlevel_server`, and
`stdio_server` only iterating its stdin and awaiting its stdout's `write` and `flush`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol, cast

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

from dessert_mcp.config import ToolNameStyle
from dessert_mcp.models import compact_schema

logger = logging.getLogger(__name__)

# Documented name -> portable name; both spellings are always callable.
TOOL_NAMES: Final = {
    "dessert.get_balance": "dessert_get_balance",
    "dessert.get_usage": "dessert_get_usage",
}

# Hosts that reject tool names outside ^[a-zA-Z0-9_-]{1,64}$, matched as case-insensitive substrings of the
# clientInfo.name they send. One dotted name there can hide the whole server, so they get underscore names.
STRICT_NAME_HOSTS: Final[dict[str, str]] = {
    "claude": "Claude Desktop and Claude Code pass tool names to the Anthropic API, which rejects dots",
    "cursor": "Cursor rejects tool names with dots",
    "copilot": "GitHub Copilot (CLI and VS Code) rejects tool names with dots",
    "visual studio code": "VS Code forwards tool names to model APIs that reject dots",
    "codex": "Codex passes tool names to the OpenAI API, whose function names reject dots",
    "openai": "the OpenAI API's function names reject dots",
}


def tool_names_for(style: ToolNameStyle, client_name: str | None) -> tuple[str, ...]:
    """The names `tools/list` shows to a client with this `clientInfo.name` under this setting."""
    if style == "auto":
        lowered = (client_name or "").lower()
        style = "underscore" if any(host in lowered for host in STRICT_NAME_HOSTS) else "dotted"
    return tuple(TOOL_NAMES.values()) if style == "underscore" else tuple(TOOL_NAMES)


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The tools reject unknown arguments, so their schema says so; null defaults say nothing a model needs
    (omitting an argument is how a caller says "all"), and neither do the titles the SDK generates."""
    closed = copy.deepcopy(schema)
    compact_schema(closed)
    for prop in closed.get("properties", {}).values():
        if prop.get("default", ...) is None:
            del prop["default"]
    return {**closed, "additionalProperties": False}


def list_names_for_client(style: ToolNameStyle) -> ServerMiddleware[Any]:
    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or ctx.request_id is None:  # a notification (no valid id) gets no answer
            return result
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(tools, list):
            logger.error("dessert_mcp.listing: the SDK's tools/list result is not the expected dict; listing all")
            return result
        params = ctx.session.client_params
        shown = tool_names_for(style, params.client_info.name if params is not None else None)
        listed = [{**t, "inputSchema": _closed(t["inputSchema"])} for t in tools if t.get("name") in shown]
        return {**result, "tools": listed}

    return middleware


class StdioIn(Protocol):
    """What `stdio_server` does with its `stdin`: iterates it for lines."""

    def __aiter__(self) -> AsyncIterator[str]: ...


class StdioOut(Protocol):
    """What `stdio_server` does with its `stdout`: writes each message as one line, then flushes."""

    async def write(self, line: str, /) -> int: ...
    async def flush(self) -> None: ...


async def run_stdio(server: MCPServer[Any], stdin: StdioIn, stdout: StdioOut) -> None:
    """`server.run_stdio_async()`, on the given streams instead of the process's own.

    `stdio_server(stdin, stdout)` takes the streams it reads and writes (documented, typed as anyio files, of which it
    only iterates the lines and awaits `write` and `flush`); `MCPServer.run_stdio_async` takes none, and runs its
    low-level server on them, which MCPServer keeps private (no public accessor yet).
    """
    lowlevel = server._lowlevel_server
    streams = cast("anyio.AsyncFile[str]", stdin), cast("anyio.AsyncFile[str]", stdout)
    async with stdio_server(*streams) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
