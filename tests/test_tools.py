from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from xml.etree import ElementTree

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.types import CallToolResult, Implementation, TextContent

from dessert_mcp.config import Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.listing import TOOL_NAMES, tool_names_for
from dessert_mcp.tools import build_server, icons
from tests.support.api import (
    CANARY_KEY,
    DOCS_BALANCE,
    DOCS_USAGE,
    FAKE_BASE_URL,
    ClosingTransport,
    FakeDessertAPI,
    assert_no_secret,
)
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_env, sandbox_settings, serve_app

DOTTED = ("dessert.get_balance", "dessert.get_usage", "dessert.get_spend")
UNDERSCORE = ("dessert_get_balance", "dessert_get_usage", "dessert_get_spend")
STRICT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MODES = ["auto", "legacy"]  # the 2026-07-28 per-request era and the 2025-11-25 handshake era
# clientInfo.name as sent by Claude Desktop, Claude Code, Cursor, VS Code and Codex.
HOST_CLIENT_NAMES = ["claude-ai", "claude-code", "cursor-vscode", "Visual Studio Code", "codex-mcp-client"]


def _settings(**env: str) -> Settings:
    return Settings.from_env({"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": FAKE_BASE_URL, **env})


def _client(api: FakeDessertAPI, settings: Settings | None = None, **kwargs: Any) -> Client:
    return Client(build_server(settings or _settings(), transport=api.transport()), **kwargs)


def _text(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", [*HOST_CLIENT_NAMES, "mcp-inspector", "some-agent"])
async def test_auto_lists_underscore_names_to_every_client(fake_api: FakeDessertAPI, host: str, mode: str) -> None:
    async with _client(fake_api, client_info=Implementation(name=host, version="1.0"), mode=mode) as client:
        listed = await client.list_tools()
    assert tuple(t.name for t in listed.tools) == UNDERSCORE


# Every way a client reaches the server: (transport, era). SSE predates the 2026-07-28 era: handshake only.
ROUTES = [
    *(
        (transport, era)
        for transport in ("stdio", "http-stateless", "http-stateful")
        for era in ("legacy", "2026-07-28")
    ),
    ("sse", "legacy"),
]


@pytest.fixture(scope="module")
def default_servers(sandbox_server: ThreadedFaultySandbox) -> Iterator[dict[str, str]]:
    """dessert-mcp with the default settings (`auto` names) over SSE and both kinds of streamable HTTP."""
    settings = sandbox_settings(sandbox_server, tool_names="auto")
    options = {
        "http-stateless": HTTPOptions(),
        "http-stateful": HTTPOptions(stateful=True),
        "sse": HTTPOptions(transport="sse"),
    }
    with ExitStack() as stack:
        urls = {name: stack.enter_context(serve_app(build_app(settings, o.check()))) for name, o in options.items()}
        yield {name: url + ("/sse" if name == "sse" else "/mcp") for name, url in urls.items()}


@pytest.mark.parametrize(("transport", "era"), ROUTES)
async def test_auto_lists_every_client_the_same_names_on_every_transport_and_era(
    sandbox_server: ThreadedFaultySandbox, default_servers: dict[str, str], transport: str, era: str
) -> None:
    # What Codex, Claude Desktop (relayed by mcp-remote) and the Inspector send as clientInfo.name.
    for host in ("codex-mcp-client", "claude-ai", "mcp-inspector"):
        info = Implementation(name=host, version="1.0")
        if transport == "stdio":
            env = sandbox_env(sandbox_server) | {"DESSERT_MCP_TOOL_NAMES": "auto"}
            target: Any = StdioServerParameters(command=sys.executable, args=["-m", "dessert_mcp"], env=env)
        elif transport == "sse":
            target = sse_client(default_servers["sse"])
        else:
            target = default_servers[transport]
        async with Client(target, mode=era, client_info=info) as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            prompt = (await client.get_prompt("spend_report")).messages[0].content
        assert (host, listed) == (host, list(UNDERSCORE))
        assert isinstance(prompt, TextContent)
        assert f"Call {UNDERSCORE[1]} " in prompt.text  # the prompt names the tool as this client was shown it


@pytest.mark.parametrize(("style", "expected"), [("dotted", DOTTED), ("underscore", UNDERSCORE)])
@pytest.mark.parametrize("host", ["claude-ai", "some-agent"])
async def test_a_forced_style_applies_to_every_client(
    fake_api: FakeDessertAPI, style: str, expected: tuple[str, ...], host: str
) -> None:
    settings = _settings(DESSERT_MCP_TOOL_NAMES=style)
    async with _client(fake_api, settings, client_info=Implementation(name=host, version="1")) as client:
        listed = await client.list_tools()
    assert tuple(t.name for t in listed.tools) == expected


def test_every_underscore_name_fits_the_strictest_hosts_pattern() -> None:
    for name in (*TOOL_NAMES.values(), *tool_names_for("underscore"), *tool_names_for("auto")):
        assert STRICT_NAME.match(name), name


@pytest.mark.parametrize("style", ["auto", "dotted", "underscore"])
@pytest.mark.parametrize("name", [*DOTTED, *UNDERSCORE])
async def test_either_spelling_is_callable_whatever_is_listed(fake_api: FakeDessertAPI, style: str, name: str) -> None:
    async with _client(fake_api, _settings(DESSERT_MCP_TOOL_NAMES=style)) as client:
        result = await client.call_tool(name, {})
    assert result.is_error is False
    assert result.structured_content is not None


@pytest.mark.parametrize("style", ["auto", "dotted"])
@pytest.mark.parametrize("arguments", [{}, {"limit": 2}, {"limit": 0}, {"page": 2}])
async def test_the_unlisted_spelling_answers_exactly_as_the_listed_one(
    fake_api: FakeDessertAPI, style: str, arguments: dict[str, Any]
) -> None:
    """The spelling tools/list does not show is registered without schemas of its own; the call is the same one."""
    async with _client(fake_api, _settings(DESSERT_MCP_TOOL_NAMES=style)) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        answers = {name: await client.call_tool(name, arguments) for name in ("dessert.get_usage", "dessert_get_usage")}
    (unlisted,) = {"dessert.get_usage", "dessert_get_usage"} - listed
    (shown,) = {"dessert.get_usage", "dessert_get_usage"} & listed
    a, b = answers[shown], answers[unlisted]
    assert (a.is_error, a.structured_content, _text(a)) == (b.is_error, b.structured_content, _text(b))


async def test_get_balance_returns_the_exact_api_values_plus_decision_fields(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        result = await client.call_tool("dessert.get_balance", {})
    structured = result.structured_content
    assert structured is not None
    assert {k: structured[k] for k in DOCS_BALANCE} == DOCS_BALANCE
    assert structured["static_ads_affordable"] == 41
    assert structured["full_ads_affordable"] == 13
    assert structured["below_auto_recharge_threshold"] is False
    assert json.loads(_text(result)) == structured


async def test_get_usage_returns_the_transactions_as_the_api_sent_them_with_a_summary(
    fake_api: FakeDessertAPI,
) -> None:
    async with _client(fake_api) as client:
        result = await client.call_tool("dessert.get_usage", {})
    structured = result.structured_content
    assert structured is not None
    assert structured["recent_transactions"] == DOCS_USAGE["recent_transactions"]
    assert structured["summary"]["count_by_type"] == {"Deduction": 1, "Purchase": 1, "Bonus": 1, "Refund": 0}
    assert "last 50 transactions" in structured["note"]
    assert json.loads(_text(result)) == structured


async def test_the_text_block_is_the_structured_content_as_compact_json(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        for name in ("dessert.get_balance", "dessert.get_usage"):
            result = await client.call_tool(name, {})
            assert len(result.content) == 1
            assert _text(result) == json.dumps(result.structured_content, separators=(",", ":"))


async def test_get_usage_filters_by_limit_types_and_since(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        result = await client.call_tool(
            "dessert_get_usage", {"limit": 1, "types": ["Purchase", "Bonus"], "since": "2026-05-12T00:00:00Z"}
        )
    assert result.structured_content is not None
    assert [t["type"] for t in result.structured_content["recent_transactions"]] == ["Purchase"]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [  # each problem is named by where it is; what follows the colon is pydantic's own wording
        ({"limit": 0}, "limit: "),
        ({"limit": 51}, "limit: "),
        ({"limit": "many"}, "limit: "),
        ({"types": ["Gift"]}, "types.0: "),
        ({"types": []}, "types: "),
        ({"since": "last tuesday"}, "since: "),
        ({"since": "2026-13-45T00:00:00Z"}, "since: "),
        ({"page": 2}, "unknown argument 'page' (accepted: limit, types, since, until, cursor)"),
    ],
)
async def test_invalid_usage_arguments_are_rejected_clearly_without_an_api_call(
    fake_api: FakeDessertAPI, arguments: dict[str, Any], problem: str
) -> None:
    async with _client(fake_api) as client:
        result = await client.call_tool("dessert.get_usage", arguments)
    assert result.is_error is True
    assert result.structured_content is None
    text = _text(result)
    assert text.startswith(f"Invalid arguments for dessert.get_usage: {problem}")
    assert text.splitlines()[0].endswith(". Fix them and call again; no API call was made.")
    assert json.loads(text.splitlines()[-1]) == {"code": "invalid_argument", "retryable": False}
    assert fake_api.requests == []


async def test_get_balance_rejects_any_argument(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        result = await client.call_tool("dessert.get_balance", {"account": "other"})
    assert result.is_error is True
    assert "unknown argument 'account' (accepted: none)" in _text(result)
    assert fake_api.requests == []


async def test_a_rejected_key_is_an_actionable_tool_error(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeDessertAPI(key="some-other-key")
    async with _client(api) as client:
        result = await client.call_tool("dessert.get_balance", {})
    assert result.is_error is True
    assert result.structured_content is None
    sentence, details = _text(result).splitlines()
    assert sentence == "Dessert rejected the API key (HTTP 401: Invalid API key.). Check DESSERT_API_KEY."
    assert json.loads(details) == {"code": "auth_invalid", "retryable": False, "status": 401}
    assert_no_secret(_text(result))
    assert_no_secret(caplog.text)


async def test_upstream_failures_keep_their_status_and_detail(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeDessertAPI({"/v1/usage": lambda r: httpx2.Response(503, json={"message": "maintenance"})})
    async with _client(api, _settings(DESSERT_BACKOFF_S="0.001")) as client:  # the retries' waits are not the point
        result = await client.call_tool("dessert.get_usage", {})
    assert result.is_error is True
    assert "Dessert is unavailable right now (HTTP 503: maintenance)." in _text(result)
    assert_no_secret(caplog.text)


async def test_without_a_key_the_tools_are_listed_and_calls_name_the_variable(fake_api: FakeDessertAPI) -> None:
    settings = Settings.from_env({"DESSERT_API_BASE_URL": FAKE_BASE_URL})
    async with _client(fake_api, settings) as client:
        listed = await client.list_tools()
        result = await client.call_tool("dessert.get_usage", {})
    assert len(listed.tools) == 3
    assert result.is_error is True
    assert "DESSERT_API_KEY is not set" in _text(result)
    assert '"code": "not_configured"' in _text(result)
    assert fake_api.requests == []


async def test_a_malformed_key_is_explained_on_each_call(fake_api: FakeDessertAPI) -> None:
    settings = Settings.from_env({"DESSERT_API_KEY": "two words", "DESSERT_API_BASE_URL": FAKE_BASE_URL})
    async with _client(fake_api, settings) as client:
        result = await client.call_tool("dessert.get_balance", {})
    assert "contains spaces or non-printable characters" in _text(result)
    assert fake_api.requests == []


async def test_every_tool_is_read_only_idempotent_open_world_and_titled(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        listed = await client.list_tools()
    for tool in listed.tools:
        assert tool.title
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.idempotent_hint is True
        assert tool.annotations.open_world_hint is True
        assert tool.annotations.destructive_hint is False
        assert tool.description is not None
        assert "consumes no credits" in tool.description
        assert tool.input_schema.get("additionalProperties") is False


@pytest.mark.parametrize("mode", MODES)
async def test_the_server_and_every_tool_show_the_same_inline_icon(fake_api: FakeDessertAPI, mode: str) -> None:
    async with _client(fake_api, mode=mode) as client:
        tools = (await client.list_tools()).tools
        server_info = client.server_info
    assert server_info is not None
    assert server_info.icons == icons()
    assert [t.icons for t in tools] == [icons()] * 3


def test_the_icon_is_a_base64_svg_with_nothing_but_shapes() -> None:
    (icon,) = icons()
    assert icon.mime_type == "image/svg+xml"
    prefix = "data:image/svg+xml;base64,"
    assert icon.src.startswith(prefix)
    svg = ElementTree.fromstring(base64.b64decode(icon.src.removeprefix(prefix), validate=True))
    ns = "{http://www.w3.org/2000/svg}"
    assert {element.tag.removeprefix(ns) for element in svg.iter()} <= {"svg", "circle", "path"}  # no script, no text
    assert not [v for element in svg.iter() for v in element.attrib.values() if ":" in v or "url(" in v]


async def test_output_schemas_come_from_the_models_with_the_docs_descriptions(fake_api: FakeDessertAPI) -> None:
    async with _client(fake_api) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    balance = tools["dessert_get_balance"].output_schema
    assert balance is not None
    assert balance["properties"]["credits_balance"]["description"] == "Current credit balance."
    usage = tools["dessert_get_usage"].output_schema
    assert usage is not None
    assert set(usage["properties"]) == {
        "recent_transactions",
        "summary",
        "history_complete",
        "seams",
        "next_cursor",
        "note",
    }


async def test_the_one_http_client_is_closed_when_the_server_stops(fake_api: FakeDessertAPI) -> None:
    transport = ClosingTransport(fake_api)
    server = build_server(_settings(), transport=transport)
    async with Client(server) as client:
        await client.call_tool("dessert.get_balance", {})
        await client.call_tool("dessert.get_usage", {})
        assert transport.closed == 0
    assert transport.closed == 1
    async with Client(server) as client:
        result = await client.call_tool("dessert.get_balance", {})
        assert transport.closed == 1
    assert transport.closed == 2
    assert result.is_error is False
    assert len(fake_api.requests) == 3


async def test_concurrent_identical_calls_make_at_most_two_upstream_requests(sandbox: ThreadedFaultySandbox) -> None:
    sandbox.add_fault(path="/v1/balance", delay_s=0.3, times=0)  # keep the first request in flight
    settings = Settings.from_env({"DESSERT_API_KEY": sandbox.key, "DESSERT_API_BASE_URL": sandbox.url})
    results: list[CallToolResult] = []
    async with Client(build_server(settings)) as client:

        async def call() -> None:
            results.append(await client.call_tool("dessert.get_balance", {}))

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(call)
    assert len(results) == 100
    assert all(r.structured_content == results[0].structured_content for r in results)
    assert results[0].structured_content is not None
    assert results[0].structured_content["credits_balance"] == 205
    assert sandbox.stats()["requests"]["/v1/balance"] <= 2


async def test_each_call_logs_one_line_with_its_outcome_and_never_its_arguments(
    fake_api: FakeDessertAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="dessert_mcp")
    async with _client(fake_api) as client:
        await client.call_tool("dessert.get_usage", {"types": ["Refund"], "since": "2026-05-01T00:00:00Z"})
        await client.call_tool("dessert.get_usage", {"limit": 99})
    calls = [r for r in caplog.records if getattr(r, "tool", None)]
    assert [(r.tool, r.code, r.levelname) for r in calls] == [  # type: ignore[attr-defined]
        ("dessert.get_usage", "ok", "INFO"),
        ("dessert.get_usage", "invalid_argument", "INFO"),
    ]
    assert all(isinstance(r.duration_ms, float) and r.request_id for r in calls)  # type: ignore[attr-defined]
    assert "Refund" not in caplog.text
    assert "2026-05-01" not in caplog.text
    assert "limit" not in caplog.text
