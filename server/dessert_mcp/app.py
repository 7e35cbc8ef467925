"""The MCP layer: the two Dessert tools, their names per host, their errors, and `build_server`."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Final

import anyio
import httpx2
from mcp.server.apps import Apps, ResourceCsp
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, ListToolsResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from dessert_mcp import __version__
from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import Settings, ToolNameStyle
from dessert_mcp.dashboard import DASHBOARD_URI, dashboard_html
from dessert_mcp.models import TRANSACTION_TYPES, Balance, BalanceReport, TransactionType, Usage, UsageReport
from dessert_mcp.singleflight import SingleFlight

logger = logging.getLogger("dessert_mcp")

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

_ANNOTATIONS: Final = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)

INSTRUCTIONS: Final = (
    "Read-only access to the user's Dessert account (an ad-generation API billed in credits): the credit "
    "balance and pricing, and the last 50 credit transactions. Both tools are free to call."
)

BALANCE_DESCRIPTION: Final = (
    "Get the Dessert account's current credit balance, auto-recharge settings and per-ad pricing, plus how many "
    "static and full ads the balance pays for right now. Use it before generating ads, or when asked about credits "
    "or spend. Free: consumes no credits."
)

USAGE_DESCRIPTION: Final = (
    "Get recent Dessert credit transactions (Deduction, Purchase, Bonus, Refund), most recent first, with totals. "
    "The API only returns the last 50 transactions; limit, types and since filter within those. "
    "history_complete=false means older matching transactions may exist. Free: consumes no credits."
)


def tool_names_for(style: ToolNameStyle, client_name: str | None) -> tuple[str, ...]:
    """The names `tools/list` shows to a client with this `clientInfo.name` under this setting."""
    if style == "auto":
        lowered = (client_name or "").lower()
        style = "underscore" if any(host in lowered for host in STRICT_NAME_HOSTS) else "dotted"
    return tuple(TOOL_NAMES.values()) if style == "underscore" else tuple(TOOL_NAMES)


def error_text(exc: DessertAPIError) -> str:
    """One actionable sentence, then a small JSON object agents and scripts can match on."""
    info: dict[str, Any] = {"code": exc.code, "retryable": exc.retryable}
    if exc.retry_after_s is not None:
        info["retry_after_s"] = exc.retry_after_s
    if exc.status is not None:
        info["status"] = exc.status
    return f"{exc.message}\n{json.dumps(info)}"


def _invalid_arguments(tool: str, accepted: list[str], exc: ValidationError) -> str:
    problems: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(accepted) if accepted else "none"
            problems.append(f"unknown argument {where!r} (accepted: {allowed})")
        else:
            problems.append(f"{where}: {err['msg']}")
    message = f"Invalid arguments for {tool}: {'; '.join(problems)}. Fix them and call again; no API call was made."
    return error_text(DessertAPIError(message, code="invalid_argument"))


class DessertTool(Tool):
    """A tool whose failures read as the project's error sentences, without the SDK's generic prefix."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            validated = self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            raise ToolError(_invalid_arguments(self.name, list(self.parameters.get("properties", {})), exc)) from None
        try:
            result = await self.fn_metadata.call_fn(self.fn, self.is_async, validated)
        except DessertAPIError as exc:
            raise ToolError(error_text(exc)) from None
        except Exception as exc:  # the tool boundary: a bug, reported without its text (the SDK logs it)
            raise UnexpectedToolError(f"Error executing tool {self.name}") from exc
        if not convert_result:
            return result
        if isinstance(result, BaseModel):
            # The text block carries the same JSON as structuredContent, compact: hosts that show the model the
            # text pay ~30 % fewer tokens than for the SDK's indented dump. The model built it, so it matches.
            return CallToolResult(
                content=[TextContent(type="text", text=result.model_dump_json(by_alias=True))],
                structured_content=result.model_dump(mode="json", by_alias=True),
            )
        return self.fn_metadata.convert_result(result)


def _make_tool(fn: Callable[..., Any], *, name: str, title: str, description: str) -> Tool:
    tool = DessertTool.from_function(
        fn,
        name=name,
        title=title,
        description=description,
        annotations=_ANNOTATIONS,
        meta={"ui": {"resourceUri": DASHBOARD_URI}},
        structured_output=True,
    )
    arg_model = tool.fn_metadata.arg_model

    class StrictArguments(arg_model):  # type: ignore[valid-type,misc]
        model_config = ConfigDict(extra="forbid")

    tool.fn_metadata.arg_model = StrictArguments
    schema = StrictArguments.model_json_schema(by_alias=True)
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        if prop.get("default", ...) is None:
            del prop["default"]
    tool.parameters = schema
    return tool


class DessertTools:
    """The tools' behaviour, and the one Dessert HTTP client they share for the life of the process."""

    def __init__(self, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._client: DessertClient | None = None
        self._users = 0
        # Identical GETs in flight at the same time share one upstream request (same key, same answer).
        self._balance_flights: SingleFlight[Balance] = SingleFlight((DessertAPIError,))
        self._usage_flights: SingleFlight[Usage] = SingleFlight((DessertAPIError,))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DessertTools]:
        """Open the HTTP client for the first user (session or transport) and close it after the last."""
        if self._users == 0:
            self._client = DessertClient.from_settings(self.settings, transport=self._transport)
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0 and self._client is not None:
                client, self._client = self._client, None
                with anyio.CancelScope(shield=True):
                    await client.aclose()

    @property
    def client(self) -> DessertClient:
        if self.settings.api_key_problem:
            raise DessertAPIError(self.settings.api_key_problem, code="not_configured")
        if self._client is None:
            raise RuntimeError("the Dessert client is used outside the server's lifespan")
        return self._client

    async def get_balance(self) -> BalanceReport:
        client = self.client
        return BalanceReport.from_balance(await self._balance_flights.run("balance", client.get_balance))

    async def get_usage(
        self,
        # Optional arguments are published without `null` variants: omitting one is how a caller says "all".
        limit: Annotated[
            int | None,
            WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 50}),
            Field(ge=1, le=50, description="Return at most this many (1-50)."),
        ] = None,
        types: Annotated[
            list[TransactionType] | None,
            WithJsonSchema({"type": "array", "items": {"enum": list(TRANSACTION_TYPES)}, "minItems": 1}),
            Field(min_length=1, description="Only these transaction types."),
        ] = None,
        since: Annotated[
            datetime | None,
            WithJsonSchema({"type": "string", "format": "date-time"}),
            Field(description="Only transactions at or after this ISO 8601 time (UTC if no offset)."),
        ] = None,
    ) -> UsageReport:
        client = self.client
        usage = await self._usage_flights.run("usage", client.get_usage)
        return UsageReport.build(usage, limit=limit, types=types, since=since)


def _names_middleware(settings: Settings) -> ServerMiddleware[Any]:
    async def list_names_for_client(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list":
            return result
        params = ctx.session.client_params
        shown = tool_names_for(settings.tool_names, params.client_info.name if params is not None else None)
        # The runner hands middleware the serialized result (a dict); a model is handled for safety.
        if isinstance(result, ListToolsResult):
            return result.model_copy(update={"tools": [t for t in result.tools if t.name in shown]})
        if isinstance(result, dict):
            tools: list[dict[str, Any]] = result.get("tools", [])
            return {**result, "tools": [t for t in tools if t.get("name") in shown]}
        return result

    return list_names_for_client


def build_server(settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> MCPServer[DessertTools]:
    """The dessert-mcp server. `transport` replaces the network for tests (e.g. `httpx2.MockTransport`)."""
    tools = DessertTools(settings, transport=transport)
    balance = _make_tool(
        tools.get_balance, name="dessert.get_balance", title="Dessert credit balance", description=BALANCE_DESCRIPTION
    )
    usage = _make_tool(
        tools.get_usage, name="dessert.get_usage", title="Dessert credit usage", description=USAGE_DESCRIPTION
    )
    # The portable spelling is the same tool under another name (schemas are built once).
    registered = [balance, usage, *(t.model_copy(update={"name": TOOL_NAMES[t.name]}) for t in (balance, usage))]
    # Temporary wiring (the core rewrite redoes it): the dashboard page, for hosts that render MCP Apps.
    apps = Apps()
    apps.add_html_resource(
        DASHBOARD_URI,
        dashboard_html(),
        title="Dessert credits dashboard",
        csp=ResourceCsp(connect_domains=[], resource_domains=[]),
        prefers_border=True,
    )
    server: MCPServer[DessertTools] = MCPServer(
        "dessert-mcp",
        title="Dessert balance & usage",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://github.com/dessert-dev/dessert-mcp",
        tools=registered,
        lifespan=lambda _server: tools.running(),
        log_level=settings.log_level,  # type: ignore[arg-type]
        middleware=[_names_middleware(settings)],
        extensions=[apps],
    )
    return server


def freeze_heap() -> None:
    """Exempt everything alive now (the SDK, pydantic, the built server: ~80,000 objects) from garbage collection.

    Call once in a serving process, after `build_server` and before serving. Each full collection would otherwise
    walk that start-up heap again (~40 ms, the event loop stalled); requests allocate little that lives. Measured
    over streamable HTTP: about +20 % calls/s. Costs microseconds; what is frozen was going to live anyway.
    """
    gc.freeze()
