"""The floor for per-call cost: the same job as get_balance written plainly on the bare SDK.

run.py builds it in memory around its own HTTP client; `python bench/floor_server.py` serves it over the SDK's own
stdio (`MCPServer.run_stdio_async`), for the stdio rows, with the upstream and key from DESSERT_API_BASE_URL and
DESSERT_API_KEY as dessert-mcp reads them.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import httpx2
from mcp.server.mcpserver import MCPServer

from dessert_mcp.models import Balance, BalanceReport


def sdk_floor_server(http: httpx2.AsyncClient) -> MCPServer[Any]:
    """An MCPServer tool making the same GET on a long-lived client."""
    server: MCPServer[Any] = MCPServer("floor", log_level="WARNING")

    @server.tool(name="plain")
    async def plain() -> BalanceReport:
        """What get_balance does: the GET, the answer validated, the report (same output schema) returned."""
        body = (await http.get("/v1/balance")).content
        return BalanceReport.from_balance(Balance.model_validate_json(body))

    return server


async def serve_stdio() -> None:
    headers = {"Authorization": f"Bearer {os.environ['DESSERT_API_KEY']}"}
    async with httpx2.AsyncClient(base_url=os.environ["DESSERT_API_BASE_URL"], headers=headers) as http:
        await sdk_floor_server(http).run_stdio_async()


if __name__ == "__main__":
    anyio.run(serve_stdio)
