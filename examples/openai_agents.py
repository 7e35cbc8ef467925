"""dessert-mcp in the OpenAI Agents SDK: the SDK's own MCP client (`MCPServerStdio`) launches it over stdio.

From the repository, after the README's Quick start:

python3 -m venv .venv-openai-agents && .venv-openai-agents/bin/pip install -r examples/requirements-openai-agents.txt
DESSERT_MCP_COMMAND=.venv/bin/dessert-mcp .venv-openai-agents/bin/python examples/openai_agents.py

It runs against the embedded sandbox (no Dessert account, no model, no network) unless DESSERT_API_KEY is set, then
against your account (DESSERT_API_BASE_URL is passed on too). DESSERT_MCP_COMMAND says how to start dessert-mcp;
without it, the `dessert-mcp` next to this Python or on PATH. It prints the tools as the agent's model is offered
them and calls both through each tool's own invoke path, the one a `Runner` uses, so it needs no OpenAI key. With
OPENAI_API_KEY set, a model then answers a question with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Tracing would upload run traces to OpenAI; this example talks to nothing but the local server.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, FunctionTool, RunContextWrapper, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio, MCPServerStdioParams
from agents.tool_context import ToolContext

QUESTION = "How many Dessert credits do I have, and what did I spend the last ones on?"


def server_params() -> MCPServerStdioParams:
    """How to launch dessert-mcp: against the account if DESSERT_API_KEY is set, else the embedded sandbox."""
    # Once dessert-mcp is published, DESSERT_MCP_COMMAND="uvx dessert-mcp" will work with nothing installed.
    command, *args = shlex.split(os.environ.get("DESSERT_MCP_COMMAND", "")) or [default_command()]
    if shutil.which(command) is None:
        sys.exit(f"{command}: not found. Install dessert-mcp, or point DESSERT_MCP_COMMAND at it.")
    # OpenAI's function names must match ^[a-zA-Z0-9_-]{1,64}$, so ask for the underscore spelling.
    env = {"DESSERT_MCP_TOOL_NAMES": "underscore", "DESSERT_MCP_LOG_LEVEL": "ERROR"}
    if os.environ.get("DESSERT_API_KEY"):
        env |= {k: os.environ[k] for k in ("DESSERT_API_KEY", "DESSERT_API_BASE_URL") if k in os.environ}
    else:
        args.append("--sandbox")
    return {"command": command, "args": args, "env": env}


def default_command() -> str:
    beside = Path(sys.executable).with_name("dessert-mcp")
    return str(beside) if beside.exists() else "dessert-mcp"


async def call(agent: Agent[None], tool: FunctionTool, arguments: dict[str, Any]) -> Any | None:
    """Call `tool` as a Runner does: its result, or None after printing what the model is told of a failure."""
    arguments_json = json.dumps(arguments)
    context = ToolContext(
        context=None, tool_name=tool.name, tool_call_id="call_1", tool_arguments=arguments_json, agent=agent
    )
    output = await tool.on_invoke_tool(context, arguments_json)
    # A result is its structured content as a JSON string; a failed call is the server's text, as a text item.
    if isinstance(output, dict) and output.get("type") == "text":
        print(f"{tool.name} failed; the model is given this tool output (a text item):", file=sys.stderr)
        print("  " + output["text"].replace("\n", "\n  "), file=sys.stderr)
        return None
    return json.loads(str(output))


def show(balance: dict[str, Any], usage: dict[str, Any]) -> None:
    print(f"\nbalance: {balance['credits_balance']} credits (${balance['credits_balance_usd_equivalent']:.2f})")
    print(f"usage: the {len(usage['recent_transactions'])} most recent transactions")
    for t in usage["recent_transactions"]:
        print(f"  {t['at']}  {t['type']:<9} {t['credits_delta']:>+5}  {t['description']}")


async def main() -> int:
    set_tracing_disabled(True)
    params = server_params()
    where = "the embedded sandbox" if "--sandbox" in params.get("args", []) else "your Dessert account"
    print(f"dessert-mcp over stdio ({where})")
    print(f"client: OpenAI Agents SDK {version('openai-agents')}, MCP Python SDK {version('mcp')}")
    async with MCPServerStdio(
        name="dessert",
        params=params,
        cache_tools_list=True,
        use_structured_content=True,  # hand the model the tool's JSON result rather than its text copy
        client_session_timeout_seconds=30,
    ) as server:
        agent = Agent(
            name="Dessert credits assistant",
            instructions="Answer questions about Dessert credits with the dessert tools.",
            mcp_servers=[server],
        )
        offered = await agent.get_all_tools(RunContextWrapper(context=None))
        tools = {tool.name: tool for tool in offered if isinstance(tool, FunctionTool)}
        print("Tools the model is offered:")
        for name, tool in tools.items():
            print(f"  {name:<22} arguments: {', '.join(tool.params_json_schema['properties']) or 'none'}")

        if (balance := await call(agent, tools["dessert_get_balance"], {})) is None:
            return 1
        if (usage := await call(agent, tools["dessert_get_usage"], {"limit": 3})) is None:
            return 1
        show(balance, usage)

        if os.environ.get("OPENAI_API_KEY"):  # a real agent run: the model chooses the tools itself
            print(f"\n{QUESTION}\n{(await Runner.run(agent, QUESTION)).final_output}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
