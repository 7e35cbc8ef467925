"""dessert-mcp in Pydantic AI: its `MCPToolset` (the FastMCP client) launches dessert-mcp over stdio.

From the repository, after the README's Quick start:

python3 -m venv .venv-pydantic-ai && .venv-pydantic-ai/bin/pip install -r examples/requirements-pydantic-ai.txt
DESSERT_MCP_COMMAND=.venv/bin/dessert-mcp .venv-pydantic-ai/bin/python examples/pydantic_ai_agent.py

It runs against the embedded sandbox (no Dessert account, no model, no network) unless DESSERT_API_KEY is set, then
against your account (DESSERT_API_BASE_URL is passed on too). DESSERT_MCP_COMMAND says how to start dessert-mcp;
without it, the `dessert-mcp` next to this Python or on PATH. A scripted `FunctionModel` stands in for the LLM: the
agent offers it the tools, it asks for both, and the agent runs the calls as it does for any model. With
OPENAI_API_KEY set, a real model then answers a question with them.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import ToolDefinition

QUESTION = "How many Dessert credits do I have, and what did I spend the last ones on?"
MODEL = "openai:gpt-5.6-luna"


def server_transport() -> StdioTransport:
    """How to launch dessert-mcp: against the account if DESSERT_API_KEY is set, else the embedded sandbox."""
    # Once dessert-mcp is published, DESSERT_MCP_COMMAND="uvx dessert-mcp" will work with nothing installed.
    command, *args = shlex.split(os.environ.get("DESSERT_MCP_COMMAND", "")) or [default_command()]
    if shutil.which(command) is None:
        sys.exit(f"{command}: not found. Install dessert-mcp, or point DESSERT_MCP_COMMAND at it.")
    # Model APIs reject dots in tool names, so ask for the underscore spelling.
    env = {"DESSERT_MCP_TOOL_NAMES": "underscore", "DESSERT_MCP_LOG_LEVEL": "ERROR"}
    if os.environ.get("DESSERT_API_KEY"):
        env |= {k: os.environ[k] for k in ("DESSERT_API_KEY", "DESSERT_API_BASE_URL") if k in os.environ}
    else:
        args.append("--sandbox")
    return StdioTransport(command, args, env=env)


def default_command() -> str:
    beside = Path(sys.executable).with_name("dessert-mcp")
    return str(beside) if beside.exists() else "dessert-mcp"


offered: list[ToolDefinition] = []


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stands in for an LLM: notes the tools it is offered, asks for both once, then ends the run."""
    if len(messages) == 1:
        offered.extend(info.function_tools)
        calls = [ToolCallPart("dessert_get_balance", {}), ToolCallPart("dessert_get_usage", {"limit": 3})]
        return ModelResponse(parts=calls)
    return ModelResponse(parts=[TextPart("Done.")])


def show(balance: dict[str, Any], usage: dict[str, Any]) -> None:
    print(f"\nbalance: {balance['credits_balance']} credits (${balance['credits_balance_usd_equivalent']:.2f})")
    print(f"usage: the {len(usage['recent_transactions'])} most recent transactions")
    for t in usage["recent_transactions"]:
        print(f"  {t['at']}  {t['type']:<9} {t['credits_delta']:>+5}  {t['description']}")


async def main() -> int:
    transport = server_transport()
    where = "the embedded sandbox" if "--sandbox" in transport.args else "your Dessert account"
    print(f"dessert-mcp over stdio ({where})")
    print(f"client: Pydantic AI {version('pydantic-ai-slim')}, FastMCP {version('fastmcp-slim')}, ", end="")
    print(f"MCP Python SDK {version('mcp')}")
    # The server's error sentence says what to fix, so a failed call is reported to the model rather than retried.
    dessert = MCPToolset(transport, tool_error_behavior="failed", init_timeout=30)
    agent = Agent(instructions="Answer questions about Dessert credits with the dessert tools.", toolsets=[dessert])
    async with agent:  # one dessert-mcp process for every run below
        result = await agent.run(QUESTION, model=FunctionModel(scripted_model))
        print("Tools the model is offered:")
        for tool in offered:
            print(f"  {tool.name:<22} arguments: {', '.join(tool.parameters_json_schema['properties']) or 'none'}")

        requests = [message for message in result.all_messages() if isinstance(message, ModelRequest)]
        returns = {part.tool_name: part for m in requests for part in m.parts if isinstance(part, ToolReturnPart)}
        for part in returns.values():
            if part.outcome != "success":
                said = f"{part.tool_name} failed; the model is given this tool return (outcome {part.outcome!r}):"
                print(said, file=sys.stderr)
                print("  " + part.model_response_str(wrap_if_error=False).replace("\n", "\n  "), file=sys.stderr)
                return 1
        show(returns["dessert_get_balance"].content, returns["dessert_get_usage"].content)

        if os.environ.get("OPENAI_API_KEY"):  # a real agent run: the model chooses the tools itself
            print(f"\n{QUESTION}\n{(await agent.run(QUESTION, model=MODEL)).output}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
