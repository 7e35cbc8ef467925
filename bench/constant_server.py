"""The throughput ceiling: one trivial constant tool on the same SDK, answered as `dessert-mcp --transport http`
answers (JSON bodies) and served by the same machinery (dessert_mcp.http.serve: our TCP sockets, one SO_REUSEPORT
socket per worker, the start-up heap frozen). The tool is async, so it runs on the event loop like ours; a sync tool
would pay a thread hop.

`python bench/constant_server.py --port N [--workers W]` serves it.
"""

from __future__ import annotations

import argparse
import socket

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from dessert_mcp.http.serve import listening_socket, serve_app, serve_workers


def create_app() -> ASGIApp:
    # WARNING, as the bench runs dessert-mcp: the SDK logs every stateless request at INFO.
    server = MCPServer("constant", log_level="WARNING")

    @server.tool(name="constant")
    async def constant() -> str:
        """A constant answer: no upstream call."""
        return "205"

    return server.streamable_http_app(stateless_http=True, json_response=True)


def _serve(sock: socket.socket) -> None:
    serve_app(create_app(), sock, log_level="WARNING")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The constant-tool MCP server, served as dessert-mcp serves.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sock = listening_socket(args.host, args.port, reuse_port=args.workers > 1)
    serve_workers(_serve, (), sock, workers=args.workers)
