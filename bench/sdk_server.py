"""The bare Python SDK doing get_balance's job over streamable HTTP: `sdk_floor_server`'s plain tool (the same GET,
the same result type), stateless, served as the SDK's documentation serves it, by uvicorn as `pip install mcp`
brings it (no uvloop, no httptools; they are asked for by name so that this venv's copies stay out of it).

`python bench/sdk_server.py --port N` serves it on 127.0.0.1:N/mcp; DESSERT_API_KEY and DESSERT_API_BASE_URL as for
dessert-mcp.
"""

from __future__ import annotations

import argparse
import os

import httpx2
import uvicorn
from floor_server import sdk_floor_server

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The bare-SDK get_balance server.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {os.environ['DESSERT_API_KEY']}"}
    http = httpx2.AsyncClient(base_url=os.environ["DESSERT_API_BASE_URL"], headers=headers)
    app = sdk_floor_server(http).streamable_http_app(stateless_http=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="asyncio", http="h11")
