"""Slow clients: 1,100 connections that never finish a request, against `dessert-mcp --transport http` started with
the usual soft limit of 1024 open files, leave /healthz answering and the log quiet.

uvicorn has no timeout for a connection that has not sent a request yet, so what keeps the server reachable is
room for the descriptors (the server lifts its soft limit to the hard one); see docs/remote.md for the limit.
"""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.servers import cli_server

HELD = 1100  # more than the 1024 descriptors that locked every other client out
USUAL_SOFT_LIMIT = 1024


@contextlib.contextmanager
def usual_soft_limit() -> Iterator[None]:
    """Processes started meanwhile inherit a soft open-files limit of 1024, what a shell or a systemd unit gives."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(USUAL_SOFT_LIMIT, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def held_connections(url: str, count: int, start: bytes) -> Iterator[None]:
    """`count` connections to the server that send `start` (maybe nothing) and then nothing more."""
    port = int(url.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if start:
                sock.sendall(start)
            held.append(sock)
        yield
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    "start", [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["idle", "partial-headers"]
)
def test_healthz_answers_and_the_log_stays_quiet_while_1100_connections_never_finish_a_request(
    start: bytes, server_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < HELD + 200:
        pytest.skip(f"this test holds {HELD} connections; the hard open-files limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds one end of each connection
    log = tmp_path / "server.log"
    try:
        with contextlib.ExitStack() as stack:
            with usual_soft_limit():
                url = stack.enter_context(cli_server(["--transport", "http"], server_env(), log))
            before = log.read_text().count("\n")
            with held_connections(url, HELD, start):
                # Queued behind all of them: it is accepted only once each of them has been.
                answer = httpx2.get(url + "/healthz", timeout=60)
                assert answer.status_code == 200
                assert answer.json() == {"status": "ok"}
            assert httpx2.get(url + "/healthz", timeout=60).status_code == 200
            grown = log.read_text().count("\n") - before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert grown < 20, log.read_text()[-3000:]
