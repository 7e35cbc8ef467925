"""The throughput ceiling: the same SDK and uvicorn set-up as `dessert-mcp --transport http --stateless`, serving
one trivial constant tool (async, so it runs on the event loop like ours; a sync tool would pay a thread hop).
Run as `uvicorn --app-dir bench --factory constant_server:create_app`."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp


def create_app() -> ASGIApp:
    server = MCPServer("constant")

    @server.tool(name="constant")
    async def constant() -> str:
        """A constant answer: no upstream call."""
        return "205"

    return server.streamable_http_app(stateless_http=True)


def create_frozen_app() -> ASGIApp:
    """The same, with its start-up heap frozen as dessert-mcp freezes its own (`freeze_heap`)."""
    import gc

    app = create_app()
    gc.freeze()
    return app
