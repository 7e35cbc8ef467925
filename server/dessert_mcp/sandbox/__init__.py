"""The sandbox: a real HTTP/1.1 server on loopback that emulates Dessert's balance and usage endpoints.

It serves the documented shapes with a consistent history (the docs' example is its latest state; a `LiveAccount`,
sandbox/activity.py, keeps adding to it) and checks the Bearer key: what `dessert-mcp sandbox`, `--sandbox`, `demo`
and the tests talk to instead of the real API. The tests' fault injection subclasses `Sandbox` and overrides
`handle` (tests/support/faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, Self

from anyio.from_thread import start_blocking_portal

from dessert_mcp.config import cannot_listen
from dessert_mcp.models import BALANCE_PATH, USAGE_PATH
from dessert_mcp.sandbox.account import SandboxAccount

SANDBOX_KEY: Final = "dsk_sandbox_4f1c2e9a7b3d45e8a0c6b2f1d9e7a5c3"
API_PATHS: Final = (BALANCE_PATH, USAGE_PATH)
_MAX_HEADER_BYTES: Final = 64 * 1024
_MAX_REQUEST_BODY: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class Sandbox:
    """The emulated API on an asyncio event loop. `ThreadedSandbox` runs one on a background thread."""

    def __init__(
        self, *, key: str = SANDBOX_KEY, port: int = 0, account: Callable[[], SandboxAccount] = SandboxAccount
    ) -> None:
        self.key = key
        self.host = "127.0.0.1"
        self._port = port
        self.new_account = account  # what a reset starts again from
        self.account = account()
        self.lock = threading.Lock()  # the account may be changed from another thread
        self._server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve_connection, self.host, self._port, limit=_MAX_HEADER_BYTES, reuse_address=True
            )
        except OSError as exc:
            raise cannot_listen(self.host, self._port, exc) from None

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self.writers):
            writer.close()
        await self._server.wait_closed()

    async def handle(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns whether the connection stays open."""
        if request.path not in API_PATHS:
            status, body = 404, error_body("not_found", f"No route for {request.path}.")
        elif request.method != "GET":
            status, body = 405, error_body("method_not_allowed", "Use GET.")
        elif not hmac.compare_digest(request.headers.get("authorization", "").encode(), f"Bearer {self.key}".encode()):
            status, body = 401, error_body("unauthorized", "Invalid API key.")
        else:
            status, body = 200, self.answer(request.path)
        await respond(writer, status, body, keep_alive=request.keep_alive)
        return request.keep_alive

    def answer(self, path: str) -> bytes:
        with self.lock:
            data = self.account.balance() if path == BALANCE_PATH else self.account.usage()
        return json.dumps(data).encode()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request = await self._read_request(head, reader, writer)
                if request is None or not await self.handle(request, reader, writer):
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | None:
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
        except ValueError:
            await respond(writer, 400, error_body("bad_request", "Malformed HTTP request."), keep_alive=False)
            return None
        if length > _MAX_REQUEST_BODY or "chunked" in headers.get("transfer-encoding", ""):
            await respond(writer, 413, error_body("too_large", "Request body too large."), keep_alive=False)
            return None
        body = await reader.readexactly(length) if length else b""
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Request(method, target.split("?", 1)[0], headers, body, keep_alive)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


def head(status: int, headers: dict[str, str], length: int, *, keep_alive: bool) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", f"Date: {formatdate(usegmt=True)}", "Server: dessert-sandbox"]
    lines += [f"{k}: {v}" for k, v in {"Content-Type": "application/json", **headers}.items()]
    lines += [f"Content-Length: {length}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, keep_alive: bool, headers: dict[str, str] | None = None
) -> None:
    # One write, so head and body leave in one segment, as from a real API server.
    writer.write(head(status, headers or {}, len(body), keep_alive=keep_alive) + body)
    await writer.drain()


class ThreadedSandbox:
    """A `Sandbox` on its own thread and event loop: `with ThreadedSandbox() as sb: sb.url`."""

    def __init__(self, sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox or Sandbox()
        self._running = contextlib.ExitStack()

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def key(self) -> str:
        return self.sandbox.key

    def __enter__(self) -> Self:
        self.portal = self._running.enter_context(start_blocking_portal(name="dessert-sandbox"))
        self.portal.call(self.sandbox.start)
        self._running.callback(self.portal.call, self.sandbox.stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._running.close()


async def run_sandbox(port: int, account: Callable[[], SandboxAccount] = SandboxAccount) -> None:
    """`dessert-mcp sandbox`: serve until interrupted, after printing how to use it."""
    from dessert_mcp.sandbox.activity import LiveAccount

    sandbox = Sandbox(port=port, account=account)
    await sandbox.start()
    live = sandbox.account
    print(
        f"Dessert sandbox listening on {sandbox.url}\n"
        + (
            f"  a live account: about {live.rate:g} transactions a second (seed {live.seed})\n"
            if isinstance(live, LiveAccount)
            else ""
        )
        + f"  DESSERT_API_BASE_URL={sandbox.url}\n"
        f"  DESSERT_API_KEY={sandbox.key}   (a sandbox key, not a secret)\n"
        "Press Ctrl+C to stop.",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
