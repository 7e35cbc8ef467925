"""Resources and prompts: listed, read and fetched through real MCP clients, in memory and over stdio."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, TextContent, TextResourceContents

from dessert_mcp.cli.hosts import server_command
from dessert_mcp.config import Settings
from dessert_mcp.tools import build_server
from tests.support.api import CANARY_KEY, FAKE_BASE_URL, FakeDessertAPI, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.measured import host_default_env

MODES = ["auto", "legacy"]


def _memory(api: FakeDessertAPI, *, tool_names: str = "auto", **kwargs: Any) -> Client:
    env = {"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": FAKE_BASE_URL, "DESSERT_MCP_TOOL_NAMES": tool_names}
    settings = Settings.from_env(env)
    return Client(build_server(settings, transport=api.transport()), **kwargs)


def _text(contents: Any) -> str:
    (block,) = contents
    assert isinstance(block, TextResourceContents)
    return block.text


@pytest.mark.parametrize("mode", MODES)
async def test_the_balance_and_usage_resources_are_the_tools_results_as_json(
    fake_api: FakeDessertAPI, mode: str
) -> None:
    async with _memory(fake_api, mode=mode) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        balance = await client.read_resource("dessert://balance")
        usage = await client.read_resource("dessert://usage")
        tool_balance = (await client.call_tool("dessert_get_balance", {})).structured_content
        tool_usage = (await client.call_tool("dessert_get_usage", {})).structured_content
    assert {"dessert://balance", "dessert://usage", "ui://dessert/dashboard.html"} <= set(listed)
    assert listed["dessert://balance"].mime_type == "application/json"
    assert json.loads(_text(balance.contents)) == tool_balance
    assert json.loads(_text(usage.contents)) == tool_usage


async def test_resource_reads_carry_a_private_short_cache_hint(fake_api: FakeDessertAPI) -> None:
    async with _memory(fake_api, mode="auto") as client:
        result = await client.read_resource("dessert://balance")
    assert result.cache_scope == "private"
    assert result.ttl_ms == 5000


async def test_a_failed_resource_read_is_a_protocol_error_with_our_sentence(fake_api: FakeDessertAPI) -> None:
    api = FakeDessertAPI(key="another-key")
    async with _memory(api) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("dessert://balance")
    assert "Dessert rejected the API key" in str(caught.value)
    assert "(auth_invalid)" in str(caught.value)
    assert_no_secret(str(caught.value))


async def test_the_two_prompts_are_listed_and_fetched(fake_api: FakeDessertAPI) -> None:
    async with _memory(fake_api) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        report = await client.get_prompt("spend_report")
        afford = await client.get_prompt("can_i_afford", {"static_ads": "3", "full_ads": "2"})
    assert set(prompts) == {"spend_report", "can_i_afford"}
    assert {a.name for a in prompts["can_i_afford"].arguments or []} == {"static_ads", "full_ads"}
    report_text = report.messages[0].content
    afford_text = afford.messages[0].content
    assert isinstance(report_text, TextContent)
    assert isinstance(afford_text, TextContent)
    assert "dessert_get_usage" in report_text.text
    assert "forecast" in report_text.text
    assert "3 static and 2 full ads" in afford_text.text
    assert "dessert_get_balance" in afford_text.text


@pytest.mark.parametrize("style", ["auto", "dotted", "underscore"])
async def test_the_prompts_and_resources_name_the_tools_as_they_are_listed(
    fake_api: FakeDessertAPI, style: str
) -> None:
    async with _memory(fake_api, tool_names=style) as client:
        listed = [t.name for t in (await client.list_tools()).tools]
        report = (await client.get_prompt("spend_report")).messages[0].content
        afford = (await client.get_prompt("can_i_afford", {"static_ads": "1"})).messages[0].content
        resources = {str(r.uri): r.description or "" for r in (await client.list_resources()).resources}
    balance, usage, _spend = listed
    assert isinstance(report, TextContent)
    assert isinstance(afford, TextContent)
    for text, shown in [
        (report.text, usage),
        (afford.text, balance),
        (resources["dessert://usage"], usage),
        (resources["dessert://balance"], balance),
    ]:
        assert shown in text
        assert set(re.findall(r"dessert[._]get_[a-z]+", text)) == {shown}  # no spelling the client was not shown


async def test_a_prompt_with_a_count_that_is_not_a_number_is_refused(fake_api: FakeDessertAPI) -> None:
    async with _memory(fake_api) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("can_i_afford", {"static_ads": "many"})
    assert "static_ads must be a whole number" in str(caught.value)


async def test_resources_and_prompts_work_over_stdio(canary_sandbox: ThreadedFaultySandbox) -> None:
    command, args = server_command()
    env = host_default_env() | {
        "DESSERT_API_KEY": CANARY_KEY,
        "DESSERT_API_BASE_URL": canary_sandbox.url,
        "DESSERT_MCP_LOG_LEVEL": "WARNING",
    }
    async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
        balance = json.loads(_text((await client.read_resource("dessert://balance")).contents))
        dashboard = (await client.read_resource("ui://dessert/dashboard.html")).contents
        prompt = await client.get_prompt("can_i_afford", {"static_ads": "41", "full_ads": "0"})
    assert balance["credits_balance"] == 205
    assert balance["static_ads_affordable"] == 41
    (page,) = dashboard
    assert page.mime_type == "text/html;profile=mcp-app"
    assert prompt.messages


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_prompt_is_refused_as_invalid_params_naming_the_prompts(
    fake_api: FakeDessertAPI, mode: str
) -> None:
    async with _memory(fake_api, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("spend_repot")
    assert caught.value.error.code == INVALID_PARAMS
    assert "'spend_repot'" in caught.value.error.message
    assert "spend_report, can_i_afford" in caught.value.error.message
