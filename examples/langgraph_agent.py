"""dessert-mcp in LangGraph: `langchain-mcp-adapters` launches it over stdio and turns its tools into LangChain tools.

From the repository, after the README's Quick start:

python3 -m venv .venv-langgraph && .venv-langgraph/bin/pip install -r examples/requirements-langgraph.txt
DESSERT_MCP_COMMAND=.venv/bin/dessert-mcp .venv-langgraph/bin/python examples/langgraph_agent.py

The adapters still need the v1 MCP Python SDK (mcp<2) while dessert-mcp runs on v2, so the two live in separate
environments and meet over stdio, as in any agent application. It runs against the embedded sandbox (no Dessert
account, no model, no network) unless DESSERT_API_KEY is set, then against your account (DESSERT_API_BASE_URL is
passed on too). DESSERT_MCP_COMMAND says how to start dessert-mcp; without it, the `dessert-mcp` next to this Python
or on PATH. It prints the tools as a chat model is offered them and runs both calls in a LangGraph graph's
`ToolNode`, where an agent executes a model's tool calls; a scripted node stands in for the model. With
OPENAI_API_KEY set, an agent from `create_agent` then answers a question with them.
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

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.sessions import StdioConnection
from langchain_mcp_adapters.tools import load_mcp_tools
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

QUESTION = "How many Dessert credits do I have, and what did I spend the last ones on?"
MODEL = "openai:gpt-5.6-luna"


def server_connection() -> StdioConnection:
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
    return {"transport": "stdio", "command": command, "args": args, "env": env}


def default_command() -> str:
    beside = Path(sys.executable).with_name("dessert-mcp")
    return str(beside) if beside.exists() else "dessert-mcp"


def scripted_model(state: MessagesState) -> dict[str, list[AIMessage]]:
    """Stands in for a chat model: answers the question with a call to each tool."""
    calls = [
        {"name": "dessert_get_balance", "args": {}, "id": "call_1"},
        {"name": "dessert_get_usage", "args": {"limit": 3}, "id": "call_2"},
    ]
    return {"messages": [AIMessage(content="", tool_calls=calls)]}


def show(balance: dict[str, Any], usage: dict[str, Any]) -> None:
    print(f"\nbalance: {balance['credits_balance']} credits (${balance['credits_balance_usd_equivalent']:.2f})")
    print(f"usage: the {len(usage['recent_transactions'])} most recent transactions")
    for t in usage["recent_transactions"]:
        print(f"  {t['at']}  {t['type']:<9} {t['credits_delta']:>+5}  {t['description']}")


async def main() -> int:
    connection = server_connection()
    where = "the embedded sandbox" if "--sandbox" in connection["args"] else "your Dessert account"
    adapters = f"langchain-mcp-adapters {version('langchain-mcp-adapters')}"
    print(f"dessert-mcp over stdio ({where})")
    print(f"client: LangGraph {version('langgraph')}, {adapters}, MCP Python SDK {version('mcp')}")
    client = MultiServerMCPClient({"dessert": connection})
    async with client.session("dessert") as session:  # one dessert-mcp process for every call below
        tools = await load_mcp_tools(session)
        print("Tools the model is offered:")
        for tool in tools:
            function = convert_to_openai_tool(tool)["function"]  # what bind_tools hands an OpenAI-style model
            print(f"  {function['name']:<22} arguments: {', '.join(function['parameters']['properties']) or 'none'}")

        # An agent's graph: a model node, then a ToolNode that runs the model's tool calls. The scripted node stands
        # in for the model and asks for both tools; the ToolNode answers each call with a ToolMessage.
        graph = StateGraph(MessagesState)
        graph.add_node("model", scripted_model)
        graph.add_node("tools", ToolNode(tools))
        graph.add_edge(START, "model")
        graph.add_edge("model", "tools")
        graph.add_edge("tools", END)
        state = await graph.compile().ainvoke({"messages": [HumanMessage(QUESTION)]})
        answers = [m for m in state["messages"] if isinstance(m, ToolMessage)]
        for message in answers:
            if message.status == "error":
                print(f"{message.name} failed; the model is given this ToolMessage (status 'error'):", file=sys.stderr)
                print("  " + message.text.replace("\n", "\n  "), file=sys.stderr)
                return 1
        show(*(json.loads(message.text) for message in answers))

        if os.environ.get("OPENAI_API_KEY"):  # a real agent run: the model chooses the tools itself
            agent = create_agent(MODEL, tools, system_prompt="Answer questions about Dessert credits with the tools.")
            reply = await agent.ainvoke({"messages": [{"role": "user", "content": QUESTION}]})
            print(f"\n{QUESTION}\n{reply['messages'][-1].text}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
