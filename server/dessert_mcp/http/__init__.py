"""HTTP serving: streamable HTTP at `/mcp` and SSE at `/sse`, with health checks, a bearer token and workers.

Only `options` is imported with the package; Starlette and uvicorn load when `app` and `serve` are used, so
`dessert-mcp` over stdio never pays for them.
"""

from dessert_mcp.http.options import HTTPOptions

__all__ = ["HTTPOptions"]
