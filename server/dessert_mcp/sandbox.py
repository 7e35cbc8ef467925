"""The sandbox: a real HTTP/1.1 server on loopback that emulates Dessert's balance and usage endpoints.

It serves the documented shapes with realistic data (the docs' example is its latest state), checks the
Bearer key, and can be told to misbehave (status codes, Retry-After, latency, hangs, trickling or
truncated bodies, malformed JSON, huge bodies, gzip bombs, redirects) so faults travel through real sockets.

Control endpoints (loopback only, no key): `POST /_sandbox/faults` (a fault object or a list of them),
`POST /_sandbox/reset`, `GET /_sandbox/stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hmac
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

SANDBOX_KEY: Final = "dsk_sandbox_4f1c2e9a7b3d45e8a0c6b2f1d9e7a5c3"
API_PATHS: Final = ("/v1/balance", "/v1/usage")
_MAX_HEADER_BYTES: Final = 64 * 1024
_MAX_REQUEST_BODY: Final = 1024 * 1024
_CHUNK: Final = 64 * 1024


@dataclass
class Fault:
    """One way to misbehave, applied to the next `times` matching API requests (0 = until reset)."""

    path: str | None = None
    times: int = 1
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict[str, str])
    body: str | None = None  # raw body; default: the real answer (200) or a JSON error (others)
    delay_s: float = 0.0  # wait before sending anything
    hang: bool = False  # never answer
    trickle_bps: float | None = None  # send the body this many bytes per second
    reset_after_bytes: int | None = None  # promise the full body, send this many bytes, then reset
    body_size: int | None = None  # send a JSON-looking body of this many bytes
    gzip_bomb: int | None = None  # gzip body that inflates to this many bytes
    redirect_to: str | None = None  # answer 302 with this Location
    close: bool = False  # close the connection without answering

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**data)


def _initial_ledger() -> list[dict[str, Any]]:
    """A consistent history, oldest first, whose last three entries are the docs' example."""
    rows = [
        ("Bonus", 50, None, "Welcome bonus", "2026-05-12T15:08:22.000Z"),
        ("Deduction", -15, None, "API ad generation (count=1, format=full)", "2026-05-12T15:20:03.000Z"),
        ("Deduction", -10, None, "API ad generation (count=2, format=static)", "2026-05-12T15:41:37.000Z"),
        ("Purchase", 250, 25.0, "Credit purchase", "2026-05-13T09:02:11.000Z"),
        ("Deduction", -75, None, "API ad generation (count=5, format=full)", "2026-05-13T09:30:45.000Z"),
        ("Deduction", -30, None, "API ad generation (count=6, format=static)", "2026-05-14T11:12:09.000Z"),
        ("Refund", 15, None, "Refund: render failed (count=1, format=full)", "2026-05-15T08:45:50.000Z"),
        ("Deduction", -60, None, "API ad generation (count=4, format=full)", "2026-05-16T16:03:27.000Z"),
        ("Deduction", -45, None, "API ad generation (count=3, format=full)", "2026-05-17T10:19:58.000Z"),
        ("Deduction", -40, None, "API ad generation (count=8, format=static)", "2026-05-18T13:37:14.000Z"),
        ("Deduction", -40, None, "API ad generation (count=8, format=static)", "2026-05-19T18:23:30.000Z"),
        ("Purchase", 250, 25.0, "Auto-recharge", "2026-05-19T18:23:48.000Z"),
        ("Deduction", -45, None, "API ad generation (count=3, format=full)", "2026-05-19T18:24:01.000Z"),
    ]
    ledger: list[dict[str, Any]] = []
    balance = 0
    for kind, delta, usd, description, at in rows:
        balance += delta
        ledger.append(
            {
                "type": kind,
                "credits_delta": delta,
                "balance_after": balance,
                "usd_amount": usd,
                "description": description,
                "at": at,
            }
        )
    return ledger


@dataclass
class SandboxAccount:
    """The emulated account; the balance endpoint is derived from the ledger."""

    ledger: list[dict[str, Any]] = field(default_factory=_initial_ledger)
    auto_recharge_enabled: bool = True
    auto_recharge_threshold: int = 20
    auto_recharge_amount_usd: float = 25.0
    credit_usd: float = 0.10
    static_ad_credits: int = 5
    full_ad_credits: int = 15

    def balance(self) -> dict[str, Any]:
        credits = self.ledger[-1]["balance_after"] if self.ledger else 0
        return {
            "credits_balance": credits,
            "credits_balance_usd_equivalent": round(credits * self.credit_usd, 2),
            "credits_lifetime_purchased": sum(r["credits_delta"] for r in self.ledger if r["type"] == "Purchase"),
            "auto_recharge_enabled": self.auto_recharge_enabled,
            "auto_recharge_threshold": self.auto_recharge_threshold,
            "auto_recharge_amount_usd": self.auto_recharge_amount_usd,
            "pricing": {
                "credit_usd": self.credit_usd,
                "static_ad_credits": self.static_ad_credits,
                "full_ad_credits": self.full_ad_credits,
            },
        }

    def usage(self) -> dict[str, Any]:
        return {"recent_transactions": list(reversed(self.ledger[-50:]))}


class Sandbox:
    """The emulated API on an asyncio event loop. `ThreadedSandbox` runs one on a background thread."""

    def __init__(self, *, key: str = SANDBOX_KEY, host: str = "127.0.0.1", port: int = 0) -> None:
        self.key = key
        self.host = host
        self._port = port
        self.account = SandboxAccount()
        self._faults: list[Fault] = []
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()  # control calls may come from another thread
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._accepted = 0
        self._chaos_faults = 0
        self._chaos: tuple[list[Fault], float, random.Random] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self._port, limit=_MAX_HEADER_BYTES, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    # Control, callable from any thread.
    def add_fault(self, fault: Fault | None = None, /, **kwargs: Any) -> None:
        with self._lock:
            self._faults.append(fault if fault is not None else Fault(**kwargs))

    def set_chaos(self, faults: list[Fault], *, rate: float, seed: int) -> None:
        """From now on, each API request without a queued fault gets one of `faults` with probability `rate`."""
        with self._lock:
            self._chaos = (list(faults), rate, random.Random(seed))

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._chaos = None
            self.account = SandboxAccount()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "total": sum(self._requests.values()),
                "pending_faults": [asdict(f) for f in self._faults],
                "open_connections": len(self._writers),
                "accepted_connections": self._accepted,
                "chaos_faults": self._chaos_faults,
            }

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            self._requests[path] += 1
            for i, fault in enumerate(self._faults):
                if fault.path is None or fault.path == path:
                    if fault.times == 1:
                        del self._faults[i]
                    elif fault.times > 1:
                        fault.times -= 1
                    return fault
            if self._chaos is not None:
                faults, rate, rng = self._chaos
                if faults and rng.random() < rate:
                    self._chaos_faults += 1
                    return rng.choice(faults)
        return None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._accepted += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                keep_alive = await self._handle(head, reader, writer)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
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
            await _respond(writer, 400, _error_body("bad_request", "Malformed HTTP request."), keep_alive=False)
            return False
        if length > _MAX_REQUEST_BODY or "chunked" in headers.get("transfer-encoding", ""):
            await _respond(writer, 413, _error_body("too_large", "Request body too large."), keep_alive=False)
            return False
        body = await reader.readexactly(length) if length else b""
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        path = target.split("?", 1)[0]

        if path.startswith("/_sandbox/"):
            status, payload = self._control(method, path, body)
            await _respond(writer, status, json.dumps(payload).encode(), keep_alive=keep_alive)
            return keep_alive
        if path not in API_PATHS:
            await _respond(writer, 404, _error_body("not_found", f"No route for {path}."), keep_alive=keep_alive)
            return keep_alive
        if method != "GET":
            await _respond(writer, 405, _error_body("method_not_allowed", "Use GET."), keep_alive=keep_alive)
            return keep_alive

        fault = self._take_fault(path)
        if fault is not None:
            return await self._misbehave(fault, path, reader, writer, keep_alive)
        if not self._authorized(headers):
            await _respond(writer, 401, _error_body("unauthorized", "Invalid API key."), keep_alive=keep_alive)
            return keep_alive
        await _respond(writer, 200, self._answer(path), keep_alive=keep_alive)
        return keep_alive

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode())

    def _answer(self, path: str) -> bytes:
        with self._lock:
            data = self.account.balance() if path == "/v1/balance" else self.account.usage()
        return json.dumps(data).encode()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            if method == "GET" and path == "/_sandbox/stats":
                return 200, self.stats()
            if method == "POST" and path == "/_sandbox/reset":
                self.reset()
                return 200, {"ok": True}
            if method == "POST" and path == "/_sandbox/faults":
                data = json.loads(body or b"null")
                items = data if isinstance(data, list) else [data]
                parsed = [Fault.from_json(item) for item in items]
                for fault in parsed:
                    self.add_fault(fault)
                return 200, {"ok": True, "added": len(parsed)}
        except (ValueError, TypeError) as exc:
            return 400, {"error": "bad_request", "message": str(exc)}
        return 404, {"error": "not_found", "message": f"No control route {method} {path}."}

    async def _misbehave(
        self, fault: Fault, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> bool:
        if fault.delay_s or fault.hang:
            # Wait, but notice a client that gives up: an aborted request must free its connection here too.
            try:
                await asyncio.wait_for(reader.read(), None if fault.hang else fault.delay_s)
                return False  # the client closed the connection
            except TimeoutError:
                pass
        if fault.close:
            _reset(writer)
            return False
        headers = dict(fault.headers)
        status = fault.status
        if fault.redirect_to is not None:
            status = 302 if status == 200 else status
            headers["Location"] = fault.redirect_to
        if fault.gzip_bomb is not None:
            body = _gzip_zeros(fault.gzip_bomb)
            headers["Content-Encoding"] = "gzip"
        elif fault.body is not None:
            body = fault.body.encode()
        elif status == 200 and fault.body_size is None:
            body = self._answer(path)
        elif status != 200:
            body = _error_body(HTTPStatus(status).phrase.lower().replace(" ", "_"), HTTPStatus(status).phrase + ".")
        else:
            body = b""
        if fault.body_size is not None:
            await _send_head(writer, status, headers, fault.body_size, keep_alive=False)
            for chunk in _filler(fault.body_size):
                writer.write(chunk)
                await writer.drain()
            return False
        if fault.reset_after_bytes is not None:
            await _send_head(writer, status, headers, len(body), keep_alive=False)
            writer.write(body[: fault.reset_after_bytes])
            await writer.drain()
            await asyncio.sleep(0.05)
            _reset(writer)
            return False
        if fault.trickle_bps is not None:
            await _send_head(writer, status, headers, len(body), keep_alive=keep_alive)
            for i in range(len(body)):
                if reader.at_eof() or writer.is_closing():
                    return False
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(1 / fault.trickle_bps)
            return keep_alive
        await _respond(writer, status, body, keep_alive=keep_alive, headers=headers)
        return keep_alive


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


def _gzip_zeros(size: int) -> bytes:
    return gzip.compress(b"\0" * size, compresslevel=9)


def _filler(size: int) -> Iterator[bytes]:
    sent = 0
    opening = b'{"recent_transactions": ["'
    yield opening
    sent += len(opening)
    while sent < size - 3:
        n = min(_CHUNK, size - 3 - sent)
        yield b"x" * n
        sent += n
    yield b'"]}'[: size - sent]


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: a real connection reset.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _head(status: int, headers: dict[str, str], length: int, *, keep_alive: bool) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", f"Date: {formatdate(usegmt=True)}", "Server: dessert-sandbox"]
    merged = {"Content-Type": "application/json", **headers}
    lines += [f"{k}: {v}" for k, v in merged.items()]
    lines += [f"Content-Length: {length}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_head(
    writer: asyncio.StreamWriter, status: int, headers: dict[str, str], length: int, *, keep_alive: bool
) -> None:
    writer.write(_head(status, headers, length, keep_alive=keep_alive))
    await writer.drain()


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    headers: dict[str, str] | None = None,
) -> None:
    # One write, so head and body leave in one segment, as from a real API server.
    writer.write(_head(status, headers or {}, len(body), keep_alive=keep_alive) + body)
    await writer.drain()


@contextlib.contextmanager
def unanswered_port() -> Iterator[str]:
    """A loopback URL whose connection attempts neither succeed nor fail: they time out.

    A listening socket that never accepts, with its accept queue already full: the kernel then drops
    further SYNs, which is what a firewalled or overloaded host looks like to a client.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def refused_port() -> str:
    """A loopback URL where nothing listens (connection refused), from a port the kernel just handed out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class ThreadedSandbox:
    """A `Sandbox` on its own thread and event loop: `with ThreadedSandbox() as sb: sb.url`."""

    def __init__(self, *, key: str = SANDBOX_KEY, port: int = 0) -> None:
        self.sandbox = Sandbox(key=key, port=port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dessert-sandbox", daemon=True)

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def key(self) -> str:
        return self.sandbox.key

    def start(self) -> ThreadedSandbox:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sandbox.start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self._loop).result(timeout=10)
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ThreadedSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, fault: Fault | None = None, /, **kwargs: Any) -> None:
        self.sandbox.add_fault(fault, **kwargs)

    def reset(self) -> None:
        self.sandbox.reset()

    def stats(self) -> dict[str, Any]:
        return self.sandbox.stats()

    def set_chaos(self, faults: list[Fault], *, rate: float, seed: int) -> None:
        self.sandbox.set_chaos(faults, rate=rate, seed=seed)


async def run_sandbox(*, port: int, key: str) -> None:
    """`dessert-mcp sandbox`: serve until interrupted, after printing how to use it."""
    sandbox = Sandbox(key=key, port=port)
    await sandbox.start()
    print(
        f"Dessert sandbox listening on {sandbox.url}\n"
        f"  DESSERT_API_BASE_URL={sandbox.url}\n"
        f"  DESSERT_API_KEY={sandbox.key}   (a sandbox key, not a secret)\n"
        "Press Ctrl+C to stop.",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
