"""The sandbox, taught to misbehave: faults and seeded chaos through real sockets, for the tests and the bench.

`FaultySandbox` answers like `dessert_mcp.sandbox.Sandbox` until told otherwise: status codes, Retry-After, latency,
hangs, trickling or truncated bodies, malformed JSON, huge bodies, gzip bombs, redirects. Control it in process
(`add_fault`, `set_chaos`, `reset`, `stats`) or over HTTP (loopback only, no key): `POST /_sandbox/faults` (a fault
object or a list of them), `POST /_sandbox/reset`, `GET /_sandbox/stats`. `python -m tests.support.faults --port N`
serves one in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import json
import random
import socket
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any, Final

from dessert_mcp.config import Secret
from dessert_mcp.models import BALANCE_PATH
from dessert_mcp.sandbox import (
    API_PATHS,
    SANDBOX_KEY,
    Request,
    Sandbox,
    SandboxAccount,
    ThreadedSandbox,
    error_body,
    head,
    respond,
)

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


class FaultySandbox(Sandbox):
    """A sandbox with queued faults, optional seeded chaos, request counts and control endpoints."""

    def __init__(
        self, *, key: str = SANDBOX_KEY, port: int = 0, account: Callable[[], SandboxAccount] = SandboxAccount
    ) -> None:
        super().__init__(key=key, port=port, account=account)
        self._faults: list[Fault] = []
        self._requests: Counter[str] = Counter()
        self._chaos_faults = 0
        self._chaos: tuple[list[Fault], float, random.Random] | None = None

    def add_fault(self, fault: Fault | None = None, /, **kwargs: Any) -> None:
        with self.lock:
            self._faults.append(fault if fault is not None else Fault(**kwargs))

    def set_chaos(self, faults: list[Fault], *, rate: float, seed: int) -> None:
        """From now on, each API request without a queued fault gets one of `faults` with probability `rate`."""
        with self.lock:
            self._chaos = (list(faults), rate, random.Random(seed))

    def reset(self) -> None:
        with self.lock:
            self._faults.clear()
            self._requests.clear()
            self._chaos = None
            self.account = self.new_account()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self._requests),
                "total": sum(self._requests.values()),
                "open_connections": len(self.writers),
                "accepted_connections": self.accepted,
                "chaos_faults": self._chaos_faults,
            }

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
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

    async def handle(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        keep_alive = request.keep_alive
        if request.path.startswith("/_sandbox/"):
            status, payload = self._control(request.method, request.path, request.body)
            await respond(writer, status, json.dumps(payload).encode(), keep_alive=keep_alive)
            return keep_alive
        if request.method == "GET" and request.path in API_PATHS:
            fault = self._take_fault(request.path)
            if fault is not None:
                return await self._misbehave(fault, request.path, reader, writer, keep_alive)
        return await super().handle(request, reader, writer)

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
            body = self.answer(path)
        elif status != 200:
            body = error_body(HTTPStatus(status).phrase.lower().replace(" ", "_"), HTTPStatus(status).phrase + ".")
        else:
            body = b""
        if fault.body_size is not None:
            writer.write(head(status, headers, fault.body_size, keep_alive=False))
            for chunk in _filler(fault.body_size):
                writer.write(chunk)
                await writer.drain()
            return False
        if fault.reset_after_bytes is not None:
            writer.write(head(status, headers, len(body), keep_alive=False))
            writer.write(body[: fault.reset_after_bytes])
            await writer.drain()
            await asyncio.sleep(0.05)
            _reset(writer)
            return False
        if fault.trickle_bps is not None:
            writer.write(head(status, headers, len(body), keep_alive=keep_alive))
            for i in range(len(body)):
                if reader.at_eof() or writer.is_closing():
                    return False
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(1 / fault.trickle_bps)
            return keep_alive
        await respond(writer, status, body, keep_alive=keep_alive, headers=headers)
        return keep_alive


_MIB: Final = 1024 * 1024
_GZIP_HEADER: Final = b"\x1f\x8b\x08\0\0\0\0\0\x02\xff"  # deflate, no name, no time, best compression, any OS


@functools.lru_cache(maxsize=4)
def _gzip_zeros(size: int) -> bytes:
    """A gzip body that inflates to `size` zero bytes: one mebibyte of zeros deflated on its own, ending on a full
    flush (byte-aligned, no reference back), repeated, then the rest as the final block. Deflating all of 200 MB
    took a second of CPU, on the sandbox's loop, while a client with a 2 s timeout waited for the answer."""
    whole, rest = divmod(size, _MIB)
    crc, zeros = 0, bytes(_MIB)
    for _ in range(whole):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    blocks = _deflated_zeros(_MIB, zlib.Z_FULL_FLUSH) * whole + _deflated_zeros(rest, zlib.Z_FINISH)
    return _GZIP_HEADER + blocks + struct.pack("<II", crc, size & 0xFFFFFFFF)


def _deflated_zeros(size: int, flush: int) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate: the gzip framing is written above
    return deflate.compress(bytes(size)) + deflate.flush(flush)


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


class ThreadedFaultySandbox(ThreadedSandbox):
    """A `FaultySandbox` on its own thread, with its controls."""

    def __init__(
        self, *, key: str = SANDBOX_KEY, port: int = 0, account: Callable[[], SandboxAccount] = SandboxAccount
    ) -> None:
        self.faulty = FaultySandbox(key=key, port=port, account=account)
        super().__init__(self.faulty)

    @property
    def account(self) -> SandboxAccount:
        return self.faulty.account

    def add_fault(self, fault: Fault | None = None, /, **kwargs: Any) -> None:
        self.faulty.add_fault(fault, **kwargs)

    def reset(self) -> None:
        self.faulty.reset()

    def stats(self) -> dict[str, Any]:
        return self.faulty.stats()

    def set_chaos(self, faults: list[Fault], *, rate: float, seed: int) -> None:
        self.faulty.set_chaos(faults, rate=rate, seed=seed)


# The account the request being answered belongs to (each connection is served by its own task).
_SERVING: ContextVar[SandboxAccount | None] = ContextVar("serving", default=None)


class AccountsSandbox(FaultySandbox):
    """A `FaultySandbox` that knows several keys, each with its own account; the first is `key` and `account`.

    Faults apply to every key. `hold()` keeps API requests waiting until `release()`; `in_flight` and `peak` count,
    per key fingerprint, the requests being answered now and at most, and `changed` is notified on every change.
    """

    def __init__(self, accounts: Mapping[str, SandboxAccount], *, port: int = 0) -> None:
        self._initial = {key: copy.deepcopy(account) for key, account in accounts.items()}
        self.changed = threading.Condition()
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self._gate: asyncio.Event | None = None
        super().__init__(key=next(iter(accounts)), port=port)
        self.reset()

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.accounts = {key: copy.deepcopy(account) for key, account in self._initial.items()}
            self.account = self.accounts[self.key]
        with self.changed:
            self.in_flight.clear()
            self.peak.clear()

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:  # on the sandbox's loop
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def answer(self, path: str) -> bytes:
        account = _SERVING.get() or self.account
        with self.lock:
            data = account.balance() if path == BALANCE_PATH else account.usage()
        return json.dumps(data).encode()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super()._serve_connection(reader, writer)
        finally:
            with self.changed:  # `writers` and `accepted` changed
                self.changed.notify_all()

    def _track(self, who: str, delta: int) -> None:
        with self.changed:
            self.in_flight[who] += delta
            self.peak[who] = max(self.peak[who], self.in_flight[who])
            self.changed.notify_all()

    async def handle(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        account = self.accounts.get(presented)
        if account is None or request.method != "GET" or request.path not in API_PATHS:
            return await super().handle(request, reader, writer)  # unknown keys get the sandbox's own 401
        who = Secret(presented).fingerprint()
        self._track(who, +1)
        token = _SERVING.set(account)
        try:
            if self._gate is not None:
                await self._gate.wait()
            fault = self._take_fault(request.path)
            if fault is not None:
                return await self._misbehave(fault, request.path, reader, writer, request.keep_alive)
            await respond(writer, 200, self.answer(request.path), keep_alive=request.keep_alive)
            return request.keep_alive
        finally:
            _SERVING.reset(token)
            self._track(who, -1)


class ThreadedAccountsSandbox(ThreadedFaultySandbox):
    """An `AccountsSandbox` on its own thread: `ThreadedAccountsSandbox({key_a: account_a, key_b: account_b})`."""

    def __init__(self, accounts: Mapping[str, SandboxAccount], *, port: int = 0) -> None:
        self.faulty = self.multi = AccountsSandbox(accounts, port=port)
        ThreadedSandbox.__init__(self, self.multi)

    def hold(self) -> None:
        self.multi.hold()

    def release(self) -> None:
        self.portal.call(self.multi.release)

    def wait_until(self, condition: Callable[[AccountsSandbox], bool], timeout_s: float = 20) -> None:
        """Block (a test thread, never the sandbox's loop) until `condition(sandbox)` holds after some change."""
        with self.multi.changed:
            assert self.multi.changed.wait_for(lambda: condition(self.multi), timeout_s), "the sandbox never got there"


async def _serve(port: int) -> None:
    sandbox = FaultySandbox(port=port)
    await sandbox.start()
    print(sandbox.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A faulty sandbox in its own process; prints its URL.")
    parser.add_argument("--port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args().port))
