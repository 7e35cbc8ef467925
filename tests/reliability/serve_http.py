"""Test launcher: serve dessert-mcp over streamable HTTP (stateless) on 127.0.0.1, configured from DESSERT_*.

Prints `PORT <n>` on stdout once listening. Stands in for `dessert-mcp --transport http` in the soak.
"""

from __future__ import annotations

import socket
import sys

import uvicorn

from dessert_mcp.config import Settings
from dessert_mcp.redact import configure_logging_for
from dessert_mcp.tools import build_server


def main() -> None:
    settings = Settings.from_env()
    configure_logging_for(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = build_server(settings).streamable_http_app(stateless_http=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    sys.stdout.write(f"PORT {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
