"""The MCP layer: the Dessert tools, their errors, and `build_server`."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final, TypeVar

import anyio
import httpx2
from mcp.server import CacheHint
from mcp.server.apps import Apps, ResourceCsp
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, Icon, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError, WithJsonSchema

from dessert_mcp import __version__
from dessert_mcp.cache import BuiltFrom
from dessert_mcp.client import DessertAPIError
from dessert_mcp.config import Settings
from dessert_mcp.context import add_alerts_resource, add_prompts, add_resources
from dessert_mcp.dashboard import DASHBOARD_URI, dashboard_html
from dessert_mcp.history import SpendArguments, SpendResult
from dessert_mcp.listing import (
    REMOTE_TOOL_NAMES,
    TOOL_NAMES,
    list_names,
    refuse_unknown_prompts,
    shown_names,
    without_sdk_spans,
)
from dessert_mcp.models import (
    AlertSettings,
    AlertThresholds,
    ArgumentSchema,
    BalanceReport,
    UsageArguments,
    UsageRangeArguments,
    UsageReport,
)
from dessert_mcp.service import DessertService
from dessert_mcp.telemetry import current_trace_id

logger = logging.getLogger("dessert_mcp")

INSTRUCTIONS: Final = (
    "Read-only access to the user's Dessert account (an ad-generation API billed in credits): the credit "
    "balance and pricing, and the last 50 credit transactions. Both tools are free to call."
)
HISTORY_INSTRUCTIONS: Final = (
    "Read-only access to the user's Dessert account (an ad-generation API billed in credits): the credit "
    "balance and pricing, the credit transactions and spend totals, from the history this server keeps. "
    "The tools are free to call."
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

RANGE_USAGE_DESCRIPTION: Final = (
    "Get Dessert credit transactions (Deduction, Purchase, Bonus, Refund), newest first, with totals and a spend "
    "forecast. The API returns only the last 50, but this server keeps every answer, so since/until reach further "
    "back. At most 50 per result: pass next_cursor as cursor for the next page. history_complete=false means "
    "transactions may be missing; seams says where. Free: consumes no credits."
)

SPEND_DESCRIPTION: Final = (
    "Get Dessert credit totals over a time range per day, week or month: by transaction type, and by ad format "
    "(full/static) for deductions and refunds. history_complete=false means transactions may be missing; seams "
    "says where. Free: consumes no credits."
)

SET_ALERTS_DESCRIPTION: Final = (
    "Set when this Dessert account's alerts fire: balance_below credits, runway_days until empty, spike_factor "
    "times the 7-day median daily spend (0 turns one off; one left out keeps its value). Returns the thresholds now "
    "in effect. Changes only this server's alerts for the caller's own account. Free: consumes no credits."
)

# How long a host may reuse a resource read when the server keeps no cache of its own (DESSERT_CACHE_TTL_S=0).
RESOURCE_TTL_MS: Final = 5000

# A cupcake, for hosts that show icons next to a server or a tool: inline (a host fetches nothing) and tiny, since
# tools/list carries it; no script, text or external reference, as the spec asks of SVG icons.
ICON_SVG: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="7" r="5" fill="#f48fb1"/>'
    '<path d="M3 8h10l-2 7H5z" fill="#a1673f"/></svg>'
)


def icons() -> list[Icon]:
    """The server's and the tools' icon: the SVG as a base64 data: URI, the form the spec names."""
    src = "data:image/svg+xml;base64," + base64.b64encode(ICON_SVG.encode()).decode("ascii")
    return [Icon(src=src, mime_type="image/svg+xml", sizes=["any"])]


_ANNOTATIONS: Final = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


# dessert.set_alerts writes the caller's own alert settings on this server: not read-only, overwrites nothing
# else, the same call twice leaves the same settings, and it talks to no outside system.
_SETTINGS_ANNOTATIONS: Final = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

ArgsT = TypeVar("ArgsT", bound=BaseModel)


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The SDK validates a tool's typed parameters itself, but its argument model lets unknown arguments through and its
# failures read "Error executing tool ...: <pydantic's text>" with no code and no call metric. So the parameters take
# anything, publish the schema UsageArguments derives, and UsageArguments validates: the invalid_argument contract.
_USAGE_ARGS: Final = UsageRangeArguments.model_json_schema(schema_generator=ArgumentSchema)["properties"]
_SPEND_ARGS: Final = SpendArguments.model_json_schema(schema_generator=ArgumentSchema)["properties"]
_ALERT_ARGS: Final = AlertSettings.model_json_schema(schema_generator=ArgumentSchema)["properties"]


def _other_spelling(name: str, listed: str) -> str:
    """The spelling of a tool's name that tools/list does not show (both are always callable)."""
    return (TOOL_NAMES | REMOTE_TOOL_NAMES)[name] if listed == name else name


def _add_alias(
    server: MCPServer[DessertService],
    tool: Callable[..., Awaitable[CallToolResult]],
    alias: str,
    title: str,
    description: str,
    hints: ToolAnnotations,
) -> None:
    """`tool` callable under the spelling no client is shown, registered lean: never listed, it needs no schema for the
    SDK to derive (that is most of what registering a tool costs at start-up). The call is the listed tool's own:
    `_call_tool` validates the raw arguments, the same result comes back, `structured_content` and all."""

    async def call(ctx: Context[DessertService]) -> CallToolResult:
        return await tool(ctx)

    server.add_tool(call, name=alias, title=title, description=description, annotations=hints, structured_output=False)


def _error_result(exc: DessertAPIError) -> CallToolResult:
    """One actionable sentence, then a small JSON object agents and scripts can match on."""
    info: dict[str, Any] = {"code": exc.code, "retryable": exc.retryable}
    if exc.retry_after_s is not None:
        info["retry_after_s"] = exc.retry_after_s
    if exc.status is not None:
        info["status"] = exc.status
    text = f"{exc.message}\n{json.dumps(info)}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _result(report: BaseModel) -> CallToolResult:
    # The text block carries the same JSON as structuredContent, compact: fewer tokens for hosts that show the
    # model the text. The SDK checks structuredContent against the output schema the annotation declares.
    return CallToolResult(
        content=[TextContent(type="text", text=report.model_dump_json())],
        structured_content=report.model_dump(mode="json"),
    )


async def _call_tool(
    tool: str,
    service: DessertService,
    results: BuiltFrom[BaseModel, CallToolResult],
    ctx: Context[DessertService],
    model: type[ArgsT],
    run: Callable[[ArgsT], Awaitable[BaseModel]],
) -> CallToolResult:
    """Run one tool call: its result or its error result, counted, timed and logged (one line, no arguments)."""
    observer = service.observer
    observer.call_started(tool)
    started = time.perf_counter()
    code = "internal_error"
    try:
        result = results(await run(_arguments(tool, ctx, model)))
        code = "ok"
        return result
    except DessertAPIError as exc:
        code = exc.code
        return _error_result(exc)
    except anyio.get_cancelled_exc_class():
        code = "cancelled"
        raise
    finally:
        elapsed = time.perf_counter() - started
        observer.call_finished(tool, code, elapsed)
        level = logging.INFO if code in _UNREMARKABLE else logging.WARNING
        if logger.isEnabledFor(level):
            ms = round(elapsed * 1000, 1)
            fields = {"tool": tool, "code": code, "duration_ms": ms, "request_id": ctx.request_id}
            if (trace_id := current_trace_id()) is not None:
                fields["trace_id"] = trace_id
            logger.log(level, "%s %s in %.1f ms", tool, code, ms, extra=fields)


# Outcomes that are no news to an operator: success, the caller's own mistake, the caller going away.
_UNREMARKABLE: Final = frozenset({"ok", "invalid_argument", "cancelled"})


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


def build_server(
    settings: Settings,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    service: DessertService | None = None,
    auth: Mapping[str, Any] | None = None,
    sdk_spans: bool = True,
) -> MCPServer[DessertService]:
    """The dessert-mcp server. `transport` replaces the network for tests (e.g. `httpx2.MockTransport`);
    `service` lets an HTTP host share (and hold open) the tools' state for its whole life. `sdk_spans=False` leaves
    out the SDK's OpenTelemetry span per message, for a process in which nothing can export spans.

    `auth` holds the `MCPServer` arguments that check bearer tokens (`auth=` with `token_verifier=` or
    `auth_server_provider=`, from the auth wing); with it every caller uses their own key, never the settings'.
    """
    service = service or DessertService(settings, transport=transport, per_account=auth is not None)
    if (auth is not None) != service.per_account:
        raise ValueError("a server with auth needs a per-account service, and only one with auth may have one")

    @asynccontextmanager
    async def lifespan(_server: MCPServer[DessertService]) -> AsyncIterator[DessertService]:
        async with service.running():
            yield service

    # Calls that shared one report (see DessertService.balance) share its finished result too.
    results: BuiltFrom[BaseModel, CallToolResult] = BuiltFrom(_result)
    # Hosts that render MCP Apps show the dashboard for either tool; every other host ignores it.
    apps = Apps()
    icon = icons()
    apps.add_html_resource(
        DASHBOARD_URI,
        dashboard_html(),
        title="Dessert credits dashboard",
        description="Balance, spend over time, the forecast and the transactions, from the tools' own results.",
        csp=ResourceCsp(connect_domains=[], resource_domains=[]),
        prefers_border=True,
    )

    async def get_balance(ctx: Context[DessertService]) -> Annotated[CallToolResult, BalanceReport]:
        return await _call_tool("dessert.get_balance", service, results, ctx, NoArguments, lambda _: service.balance())

    async def get_usage(
        ctx: Context[DessertService],
        limit: Annotated[Any, WithJsonSchema(_USAGE_ARGS["limit"])] = None,
        types: Annotated[Any, WithJsonSchema(_USAGE_ARGS["types"])] = None,
        since: Annotated[Any, WithJsonSchema(_USAGE_ARGS["since"])] = None,
    ) -> Annotated[CallToolResult, UsageReport]:
        return await _call_tool("dessert.get_usage", service, results, ctx, UsageArguments, service.usage)

    async def get_usage_range(
        ctx: Context[DessertService],
        limit: Annotated[Any, WithJsonSchema(_USAGE_ARGS["limit"])] = None,
        types: Annotated[Any, WithJsonSchema(_USAGE_ARGS["types"])] = None,
        since: Annotated[Any, WithJsonSchema(_USAGE_ARGS["since"])] = None,
        until: Annotated[Any, WithJsonSchema(_USAGE_ARGS["until"])] = None,
        cursor: Annotated[Any, WithJsonSchema(_USAGE_ARGS["cursor"])] = None,
    ) -> Annotated[CallToolResult, UsageReport]:
        return await _call_tool("dessert.get_usage", service, results, ctx, UsageRangeArguments, service.usage)

    async def get_spend(
        ctx: Context[DessertService],
        since: Annotated[Any, WithJsonSchema(_SPEND_ARGS["since"])] = None,
        until: Annotated[Any, WithJsonSchema(_SPEND_ARGS["until"])] = None,
        period: Annotated[Any, WithJsonSchema(_SPEND_ARGS["period"])] = None,
    ) -> Annotated[CallToolResult, SpendResult]:
        return await _call_tool("dessert.get_spend", service, results, ctx, SpendArguments, service.spend)

    async def set_alerts(
        ctx: Context[DessertService],
        balance_below: Annotated[Any, WithJsonSchema(_ALERT_ARGS["balance_below"])] = None,
        runway_days: Annotated[Any, WithJsonSchema(_ALERT_ARGS["runway_days"])] = None,
        spike_factor: Annotated[Any, WithJsonSchema(_ALERT_ARGS["spike_factor"])] = None,
    ) -> Annotated[CallToolResult, AlertThresholds]:
        return await _call_tool("dessert.set_alerts", service, results, ctx, AlertSettings, service.set_alerts)

    tools: list[tuple[Callable[..., Any], str, str, str, ToolAnnotations]] = [
        (get_balance, "dessert.get_balance", "Dessert credit balance", BALANCE_DESCRIPTION, _ANNOTATIONS),
        (get_usage, "dessert.get_usage", "Dessert credit usage", USAGE_DESCRIPTION, _ANNOTATIONS),
    ]
    if service.recorder is not None:  # with DESSERT_LEDGER=off the tools are what they were before the ledger
        tools[1] = (get_usage_range, "dessert.get_usage", "Dessert credit usage", RANGE_USAGE_DESCRIPTION, _ANNOTATIONS)
        tools.append((get_spend, "dessert.get_spend", "Dessert credit spend", SPEND_DESCRIPTION, _ANNOTATIONS))
    if service.per_account and service.alerting:
        # In the remote modes each account's user sets their own thresholds; in single-key mode the settings do.
        tools.append(
            (
                set_alerts,
                "dessert.set_alerts",
                "Dessert alert thresholds",
                SET_ALERTS_DESCRIPTION,
                _SETTINGS_ANNOTATIONS,
            )
        )
    names = shown_names(settings.tool_names)
    for fn, name, title, description, hints in tools:
        # The spelling tools/list shows, whole (schemas derived from the parameters and the return annotation).
        apps.tool(
            resource_uri=DASHBOARD_URI,
            name=names[name],
            title=title,
            description=description,
            annotations=hints,
            icons=icon,
            structured_output=True,
        )(fn)

    # The resources' `ttlMs`: the server's own cache ttl when it keeps one, so both say the same freshness.
    ttl_ms = round(settings.cache_ttl_s * 1000) if settings.cache_ttl_s > 0 else RESOURCE_TTL_MS
    server: MCPServer[DessertService] = MCPServer(
        "dessert-mcp",
        title="Dessert balance & usage",
        version=__version__,
        instructions=INSTRUCTIONS if service.recorder is None else HISTORY_INSTRUCTIONS,
        website_url="https://github.com/dessert-dev/dessert-mcp",
        icons=icon,
        lifespan=lifespan,
        log_level=settings.log_level,
        # `server` is bound by the time a request arrives: the prompts are the ones add_prompts registers below.
        middleware=[
            list_names(settings.tool_names, remote=service.per_account),
            refuse_unknown_prompts(lambda: server.list_prompts()),
        ],
        extensions=[apps],
        # Balance and usage change with every ad generated: a client may reuse a read for a few seconds, never share it.
        cache_hints={"resources/read": CacheHint(ttl_ms=ttl_ms, scope="private")},
        # subscriptions/listen streams hear the changes the ledger keeps, each stream its own account's only.
        subscriptions=service.events,
        **(auth or {}),
    )
    for fn, name, title, description, hints in tools:
        _add_alias(server, fn, _other_spelling(name, names[name]), title, description, hints)
    add_resources(server, service, names, history=service.recorder is not None)
    if service.alerting:
        add_alerts_resource(server, service)
    add_prompts(server, names)
    if not sdk_spans:
        without_sdk_spans(server)
    return server
