"""dessert-mcp in the OpenAI Agents SDK: the framework's own MCP client launches the server over stdio.

    pip install dessert-mcp openai-agents        # `make install` has both
    python examples/openai_agents.py             # the embedded sandbox: no Dessert account, no model, no network
    DESSERT_API_KEY=... python examples/openai_agents.py   # your account (DESSERT_API_BASE_URL is passed on too)

It prints the tools as the agent's model would be offered them (names valid for OpenAI's function-name rule,
^[a-zA-Z0-9_-]{1,64}$) and calls get_balance through the tool's own invoke path, the one a Runner uses, so it needs
no OpenAI key. With OPENAI_API_KEY set, `await Runner.run(agent, "How many Dessert credits do I have?")` inside the
`async with` block lets a model choose the tool itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

# Tracing would upload run traces to OpenAI; this example talks to nothing but the local server.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, RunContextWrapper, set_tracing_disabled
from agents.mcp import MCPServerStdio, MCPServerStdioParams
from agents.tool import FunctionTool
from agents.tool_context import ToolContext

OPENAI_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def server_params() -> MCPServerStdioParams:
    """`python -m dessert_mcp` from this interpreter: against the account if a key is set, else the sandbox."""
    # OpenAI's function names reject the dotted spelling, so ask for the underscore one.
    env = {"DESSERT_MCP_TOOL_NAMES": "underscore", "DESSERT_MCP_LOG_LEVEL": "WARNING"}
    args = ["-m", "dessert_mcp"]
    if os.environ.get("DESSERT_API_KEY"):
        env |= {k: v for k, v in os.environ.items() if k in ("DESSERT_API_KEY", "DESSERT_API_BASE_URL")}
    else:
        args.append("--sandbox")
    return {"command": sys.executable, "args": args, "env": env}


async def main() -> None:
    set_tracing_disabled(True)
    params = server_params()
    where = "the embedded sandbox" if "--sandbox" in params.get("args", []) else "your Dessert account"
    async with MCPServerStdio(
        name="dessert",
        params=params,
        cache_tools_list=True,
        use_structured_content=True,  # hand the model the tool's JSON result rather than its text copy
        client_session_timeout_seconds=30,
    ) as server:
        agent = Agent(
            name="Dessert credits assistant",
            instructions="Answer questions about the user's Dessert credits with the dessert tools.",
            mcp_servers=[server],
        )
        tools = [t for t in await agent.get_all_tools(RunContextWrapper(context=None)) if isinstance(t, FunctionTool)]
        print(f"Tools the agent's model is offered ({where}):")
        for tool in tools:
            valid = "yes" if OPENAI_FUNCTION_NAME.match(tool.name) else "NO"
            arguments = ", ".join(tool.params_json_schema.get("properties", {})) or "none"
            print(f"  {tool.name:<22} OpenAI-valid name: {valid}   arguments: {arguments}")

        balance_tool = next(t for t in tools if t.name.endswith("get_balance"))
        context = ToolContext(
            context=None, tool_name=balance_tool.name, tool_call_id="call_1", tool_arguments="{}", agent=agent
        )
        output = str(await balance_tool.on_invoke_tool(context, "{}"))
        try:
            balance = json.loads(output)
        except json.JSONDecodeError:  # a failed call comes back as the server's error sentence, for the model
            sys.exit(f"{balance_tool.name} failed: {output}")
        print(f"\n{balance_tool.name} through the agent's tool: {json.dumps(balance, indent=2)}")
        print(f"\nbalance: {balance['credits_balance']} credits")


if __name__ == "__main__":
    asyncio.run(main())
