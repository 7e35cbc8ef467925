"""The MCP layer: the two Dessert tools, their errors, and `build_server`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final, TypeVar

import anyio
import httpx2
from mcp.server import CacheHint
from mcp.server.apps import Apps, ResourceCsp
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError, WithJsonSchema

from dessert_mcp import __version__
from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import Settings
from dessert_mcp.context import add_prompts, add_resources
from dessert_mcp.dashboard import DASHBOARD_URI, dashboard_html
from dessert_mcp.listing import TOOL_NAMES, list_names_for_client
from dessert_mcp.models import TRANSACTION_TYPES, BalanceReport, Usage, UsageArguments, UsageReport
from dessert_mcp.singleflight import SingleFlight

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
    "Get recent Dessert credit transactions (Deduction, Purchase, Bonus, Refund), newest first, with totals and a "
    "spend forecast. The API only returns the last 50 transactions; limit, types and since filter within those. "
    "history_complete=false means older matching transactions may exist. Free: consumes no credits."
)

RESOURCE_TTL_MS: Final = 5000

_ANNOTATIONS: Final = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


ArgsT = TypeVar("ArgsT", bound=BaseModel)


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The published schema of each argument: no null variants (omitting one is how a caller says "all") and no titles.
# The SDK validates nothing beyond it; UsageArguments does, so failures read as this server's errors.
_ARG: Final = {name: field.description for name, field in UsageArguments.model_fields.items()}
_LIMIT: Final = {"type": "integer", "minimum": 1, "maximum": 50, "description": _ARG["limit"]}
_TYPES: Final = {"type": "array", "items": {"enum": [*TRANSACTION_TYPES]}, "minItems": 1, "description": _ARG["types"]}
_SINCE: Final = {"type": "string", "format": "date-time", "description": _ARG["since"]}


def error_text(exc: DessertAPIError) -> str:
    """One actionable sentence, then a small JSON object agents and scripts can match on."""
    info: dict[str, Any] = {"code": exc.code, "retryable": exc.retryable}
    if exc.retry_after_s is not None:
        info["retry_after_s"] = exc.retry_after_s
    if exc.status is not None:
        info["status"] = exc.status
    return f"{exc.message}\n{json.dumps(info)}"


def _error_result(exc: DessertAPIError) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=error_text(exc))], is_error=True)


def _result(report: BaseModel) -> CallToolResult:
    # The text block carries the same JSON as structuredContent, compact: fewer tokens for hosts that show the
    # model the text. The SDK checks structuredContent against the output schema the annotation declares.
    return CallToolResult(
        content=[TextContent(type="text", text=report.model_dump_json())],
        structured_content=report.model_dump(mode="json"),
    )


def _arguments(tool: str, ctx: Context[Any, Any], model: type[ArgsT]) -> ArgsT:
    """The call's raw arguments validated by `model`; unknown ones are refused, not ignored."""
    params = ctx.request_context.params or {}
    raw = params.get("arguments") or {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems: list[str] = []
        accepted = ", ".join(model.model_fields) or "none"
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in err["loc"]) or "arguments"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown argument {where!r} (accepted: {accepted})")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise DessertAPIError(
            f"Invalid arguments for {tool}: {'; '.join(problems)}. Fix them and call again; no API call was made.",
            code="invalid_argument",
        ) from None


class DessertService:
    """The tools' behaviour, and the one Dessert HTTP client they share for the life of the process."""

    def __init__(self, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._client: DessertClient | None = None
        self._users = 0
        # Identical GETs in flight at the same time share one upstream request (same key, same answer).
        self._balance_flights: SingleFlight[BalanceReport] = SingleFlight((DessertAPIError,))
        self._usage_flights: SingleFlight[Usage] = SingleFlight((DessertAPIError,))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DessertService]:
        """Open the HTTP client for the first user (the process, a session, a request) and close it after the last."""
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
        if self._client is None:
            raise RuntimeError("the Dessert client is used outside the server's lifespan")
        return self._client

    async def balance(self) -> BalanceReport:
        # Callers that join a flight share its report as well as its GET.
        return await self._balance_flights.run("balance", self._balance_report)

    async def _balance_report(self) -> BalanceReport:
        return BalanceReport.from_balance(await self.client.get_balance())

    async def usage(self, arguments: UsageArguments) -> UsageReport:
        usage = await self._usage_flights.run("usage", self.client.get_usage)
        return UsageReport.build(usage, limit=arguments.limit, types=arguments.types, since=arguments.since)


def build_server(
    settings: Settings,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    service: DessertService | None = None,
) -> MCPServer[DessertService]:
    """The dessert-mcp server. `transport` replaces the network for tests (e.g. `httpx2.MockTransport`);
    `service` lets an HTTP host share (and hold open) the tools' state for its whole life."""
    service = service or DessertService(settings, transport=transport)

    @asynccontextmanager
    async def lifespan(_server: MCPServer[DessertService]) -> AsyncIterator[DessertService]:
        async with service.running():
            yield service

    # Hosts that render MCP Apps show the dashboard for either tool; every other host ignores it.
    apps = Apps()
    apps.add_html_resource(
        DASHBOARD_URI,
        dashboard_html(),
        title="Dessert credits dashboard",
        description="Balance, spend over time, the forecast and the transactions, from the tools' own results.",
        csp=ResourceCsp(connect_domains=[], resource_domains=[]),
        prefers_border=True,
    )

    async def get_balance(ctx: Context[DessertService]) -> Annotated[CallToolResult, BalanceReport]:
        try:
            _arguments("dessert.get_balance", ctx, NoArguments)
            return _result(await ctx.request_context.lifespan_context.balance())
        except DessertAPIError as exc:
            return _error_result(exc)

    async def get_usage(
        ctx: Context[DessertService],
        limit: Annotated[Any, WithJsonSchema(_LIMIT)] = None,
        types: Annotated[Any, WithJsonSchema(_TYPES)] = None,
        since: Annotated[Any, WithJsonSchema(_SINCE)] = None,
    ) -> Annotated[CallToolResult, UsageReport]:
        try:
            arguments = _arguments("dessert.get_usage", ctx, UsageArguments)
            return _result(await ctx.request_context.lifespan_context.usage(arguments))
        except DessertAPIError as exc:
            return _error_result(exc)

    for fn, name, title, description in (
        (get_balance, "dessert.get_balance", "Dessert credit balance", BALANCE_DESCRIPTION),
        (get_usage, "dessert.get_usage", "Dessert credit usage", USAGE_DESCRIPTION),
    ):
        # Both spellings are the same tool; listing.py decides which one each client is shown.
        for spelling in (name, TOOL_NAMES[name]):
            apps.tool(
                resource_uri=DASHBOARD_URI,
                name=spelling,
                title=title,
                description=description,
                annotations=_ANNOTATIONS,
                structured_output=True,
            )(fn)

    server: MCPServer[DessertService] = MCPServer(
        "dessert-mcp",
        title="Dessert balance & usage",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://github.com/dessert-dev/dessert-mcp",
        lifespan=lifespan,
        log_level=settings.log_level,  # type: ignore[arg-type]
        middleware=[list_names_for_client(settings.tool_names)],
        extensions=[apps],
        # Balance and usage change with every ad generated: a client may reuse a read for a few seconds, never share it.
        cache_hints={"resources/read": CacheHint(ttl_ms=RESOURCE_TTL_MS, scope="private")},
    )
    add_resources(server, service)
    add_prompts(server)
    return server
