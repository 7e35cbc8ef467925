"""A webhook receiver on 127.0.0.1 for the tests: it answers each request as scripted and keeps what it received."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import ServedApp

# What the receiver does with a request: answer with this status (an int), or "hang" (never answer).
Answer = int | str


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers the n-th request with `script[n]` (then `then` for every request after), and keeps every request."""

    def __init__(self, script: list[Answer], then: Answer = 200, *, retry_after: str | None = None) -> None:
        self.script = list(script)
        self.then = then
        self.retry_after = retry_after
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self.url = ""

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        with self._changed:
            answer = self.script[len(self.received)] if len(self.received) < len(self.script) else self.then
            self.received.append(Received(request.url.path, dict(request.headers), body))
            self._changed.notify_all()
        if answer == "hang":
            await asyncio.Event().wait()  # until the server stops; the sender gives up first
        headers = {"retry-after": self.retry_after} if self.retry_after else {}
        return Response(f"answer {answer}", status_code=int(answer), headers=headers)

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[Received]:
        """Block until `count` requests came (for a worker thread: `anyio.to_thread.run_sync`)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise TimeoutError(f"{len(self.received)} of {count} webhook requests came")
            return list(self.received)


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    served = ServedApp(app, timeout_graceful_shutdown=1)
    receiver.url = served.url
    try:
        yield receiver
    finally:
        served.join()
