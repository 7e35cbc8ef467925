"""What clients are shown (one spelling of each tool name, closed argument objects, no prompt that is not there), and
the server run on stdio streams of our own.

This is the one place dessert-mcp builds on something the SDK does not offer publicly. The SDK has no way to list
one spelling of a tool registered under two names and no way to declare a tool's arguments closed
(`additionalProperties: false`), so a middleware (a provisional API: "observe and refuse") trims the finished
`tools/list` result. It answers `prompts/get` for an unknown name with the SDK's compatibility code 0, where the
spec says -32602, so a second middleware refuses those before the SDK sees them. A serving process that nothing can
trace drops the SDK's own per-message span middleware, as the SDK's OpenTelemetry page shows ("Turning it off").
And `MCPServer` serves stdio only on the process's own streams, so `run_stdio` hands `stdio_server` ours (see
dessert_mcp.stdio) and runs MCPServer's private low-level server on them. Everything else stands on documented API.
`tests/test_listing.py` fails, naming this module, if the SDK changes what this relies on: the middleware signature,
`ctx.method`, `ctx.params`, `ctx.request_id`, the result handed back as a wire-form dict, an `MCPError` raised in a
middleware reaching the client as it was raised, `MCPServer._lowlevel_server`, and `stdio_server` only iterating its
stdin and awaiting its stdout's `write` and `flush`; and, for `without_sdk_spans`, the SDK's tracing middleware
where its OpenTelemetry page says.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, Protocol, cast

import anyio
from mcp import MCPError
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.types import INVALID_PARAMS, Prompt

from dessert_mcp.config import ToolNameStyle
from dessert_mcp.models import compact_schema

logger = logging.getLogger(__name__)

# Documented name -> portable name; both spellings are always callable.
TOOL_NAMES: Final = {
    "dessert.get_balance": "dessert_get_balance",
    "dessert.get_usage": "dessert_get_usage",
    "dessert.get_spend": "dessert_get_spend",
}
# Tools served only in the remote modes (--auth), after the others.
REMOTE_TOOL_NAMES: Final = {"dessert.set_alerts": "dessert_set_alerts"}


def shown_names(style: ToolNameStyle) -> dict[str, str]:
    """Documented name -> the name `tools/list` shows under this setting, the same to every client.

    `auto` needs no client name: over stateless HTTP there is none (each request is a fresh session), so deciding by
    it gave one client different names on different transports. Every host measured accepts underscore names; a
    few reject dots (see the README's "Portable tool names"), so `auto` lists underscores and dots are opt-in.
    """
    every = TOOL_NAMES | REMOTE_TOOL_NAMES
    return {name: name if style == "dotted" else portable for name, portable in every.items()}


def tool_names_for(style: ToolNameStyle, *, remote: bool = False) -> tuple[str, ...]:
    """The names `tools/list` shows under this setting (`remote`: with --auth)."""
    shown = shown_names(style)
    return tuple(shown[name] for name in (*TOOL_NAMES, *(REMOTE_TOOL_NAMES if remote else ())))


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The tools reject unknown arguments, so their schema says so; null defaults say nothing a model needs
    (omitting an argument is how a caller says "all"), and neither do the titles the SDK generates."""
    closed = copy.deepcopy(schema)
    compact_schema(closed)
    for prop in closed.get("properties", {}).values():
        if prop.get("default", ...) is None:
            del prop["default"]
    return {**closed, "additionalProperties": False}


def list_names(style: ToolNameStyle, *, remote: bool = False) -> ServerMiddleware[Any]:
    shown = tool_names_for(style, remote=remote)

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or ctx.request_id is None:  # a notification (no valid id) gets no answer
            return result
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(tools, list):
            logger.error("dessert_mcp.listing: the SDK's tools/list result is not the expected dict; listing all")
            return result
        listed = [{**t, "inputSchema": _closed(t["inputSchema"])} for t in tools if t.get("name") in shown]
        return {**result, "tools": listed}

    return middleware


def refuse_unknown_prompts(known: Callable[[], Awaitable[Iterable[Prompt]]]) -> ServerMiddleware[Any]:
    """`prompts/get` for a name `known()` does not list is the caller's mistake: -32602, as the spec says."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "prompts/get":
            name = (ctx.params or {}).get("name")
            names = [prompt.name for prompt in await known()]
            if name not in names:
                raise MCPError(
                    code=INVALID_PARAMS, message=f"Unknown prompt {name!r}; this server's prompts: {', '.join(names)}."
                )
        return await call_next(ctx)

    return middleware


def without_sdk_spans(server: MCPServer[Any]) -> None:
    """Take the SDK's OpenTelemetry middleware off `server`'s list, as the SDK's OpenTelemetry page shows.

    It opens a span for every message, which costs a few per cent of a call even when no tracer provider is set
    and nothing can receive it. The serving commands take it off only then (see `dessert_mcp.observe.spans_heard`).
    """
    server.middleware[:] = [m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)]


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
