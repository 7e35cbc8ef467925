"""A real Redis for the tests that need one (Debian's `redis-server`, on a free 127.0.0.1 port, keeping nothing on
disk), which a test may stop and start again on the same port; and the `redis_server` fixture."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, printed, started

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """`redis-server` on `port`, in the foreground, its output in `dir`/redis.log; `start` and `stop` at will."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self._running: contextlib.ExitStack | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self._running is None, "already running"
        argv = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            "",
        ]
        stack = contextlib.ExitStack()
        log = self.directory / "redis.log"
        stack.enter_context(started(argv, env={}, ready=printed("Ready to accept connections"), log=log))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session; a test that stops it starts it again before it ends."""
    if shutil.which(REDIS_SERVER) is None:
        pytest.fail("redis-server is not installed: run `make system-deps` (apt-get install redis-server).")
    directory = Path(tempfile.mkdtemp(prefix="dessert-redis-"))
    server = RedisServer(free_port(), directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
