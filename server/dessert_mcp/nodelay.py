"""uvicorn's HTTP protocol with TCP_NODELAY set on every connection, for `--workers N`.

With `--workers` above 1, uvicorn binds the listening socket itself with `proto` 0; accepted sockets inherit it,
and asyncio only turns Nagle's algorithm off when `proto` is IPPROTO_TCP. Each keep-alive response after the
first then waits ~40 ms for the client's delayed ACK (uvicorn issue #3149, open): 2 workers served ~350 calls/s
where 1 served ~1,300. Setting the option per connection fixes it whatever made the listening socket.
Passed to uvicorn by name (`http="dessert_mcp.nodelay:NoDelayHTTPProtocol"`) so worker processes import it.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's default HTTP protocol (httptools if installed, else h11), with Nagle's algorithm off."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport)
        super().connection_made(transport)
