"""uvicorn's protocol with TCP_NODELAY: what `--workers N` needs to answer keep-alive requests without a delay."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time

import pytest
import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from dessert_mcp.config import Settings
from dessert_mcp.transports import OPTIONS_ENV, HTTPOptions, create_app, serve_http


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("hello")(scope, receive, send)


def nodelay_of_served_connection(http: str) -> int:
    """Serve one keep-alive request on a socket bound the way `uvicorn --workers` binds it (`proto` 0) and read
    TCP_NODELAY off the server's side of the connection."""
    config = uvicorn.Config(hello, http=http, log_config=None, lifespan="off", access_log=False)
    listener = config.bind_socket()
    assert listener.proto == 0  # what the multi-worker supervisor hands its workers
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.01)
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            (connection,) = server.server_state.connections
            served = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            nodelay: int = served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            return nodelay
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def test_connections_accepted_on_a_worker_style_socket_have_nagle_turned_off() -> None:
    assert nodelay_of_served_connection("dessert_mcp.nodelay:NoDelayHTTPProtocol") != 0


@pytest.mark.parametrize(("workers", "stateless"), [(1, False), (2, True)])
def test_the_http_transports_serve_with_the_nodelay_protocol(
    monkeypatch: pytest.MonkeyPatch, workers: int, stateless: bool
) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the worker path hands its settings down through it
    try:
        serve_http(Settings(log_level="WARNING"), HTTPOptions(workers=workers, stateless=stateless))
        if workers == 1:  # the worker processes freeze their own heap in create_app
            assert gc.get_freeze_count() > 10_000, "the serving process should freeze its start-up heap"
    finally:
        gc.unfreeze()
    assert seen["http"] == "dessert_mcp.nodelay:NoDelayHTTPProtocol"
    assert seen.get("workers", 1) == workers


def test_a_worker_process_freezes_its_start_up_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPTIONS_ENV, HTTPOptions(workers=2, stateless=True).to_env())
    try:
        create_app()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
