"""Serving MCP over stdio: answer every call already read before exiting on EOF, and stop at once on Ctrl+C.

The SDK ends its stdio session as soon as stdin closes, dropping calls still in flight; scripts that write their
requests and close stdin would lose answers (reported upstream as modelcontextprotocol/python-sdk#2678, open,
https://github.com/modelcontextprotocol/python-sdk/issues/2678; drop this once a release fixes it). So the SDK's stdio
transport is handed streams of our own (`stdio_server(stdin, stdout)`): the stdin stream notes each request id as it
delivers the line, the stdout stream each answer id as the SDK writes it, and at the end of the input the stdin stream
waits until every request it delivered has been answered (or the call deadline has passed) before it reports the end.
A request the client cancelled is not waited for (it gets no answer), nor a modern client's `subscriptions/listen`
stream (it stays open until the server stops).
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import functools
import gc
import io
import json
import logging
import os
import re
import select
import signal
import stat
import sys
import threading
from collections import Counter, deque
from collections.abc import Iterator
from typing import Final

import anyio
import anyio.to_thread

from dessert_mcp.config import Settings
from dessert_mcp.heap import keep_start_up_heap
from dessert_mcp.redact import configure_logging_for

logger = logging.getLogger("dessert_mcp")

TTY_HINT: Final = (
    "dessert-mcp: waiting for an MCP client on stdin; hosts such as Claude Desktop launch it for you. "
    "To try it, run `dessert-mcp demo` or open `dessert-mcp --sandbox` in the MCP Inspector. Ctrl+C quits."
)
_CHUNK: Final = 64 * 1024


def serve_stdio(settings: Settings) -> None:
    """Serve until stdin closes (and every call read has been answered), SIGTERM or Ctrl+C."""
    exit_on_ctrl_c()
    # Importing the SDK and building the server makes most of the objects this process will hold, for its whole life:
    # collecting while they are made only costs start-up time. Collection resumes below, with them frozen.
    gc.disable()
    from dessert_mcp.listing import run_stdio
    from dessert_mcp.observe import requested_exporters, spans_heard
    from dessert_mcp.tools import build_server

    server = build_server(settings, sdk_spans=spans_heard(os.environ))
    # After build_server: the SDK sets up logging of its own when a server is built; this replaces it.
    configure_logging_for(settings)
    if requested_exporters(os.environ):  # the exporting half loads only when an OTEL_* variable asks for it
        from dessert_mcp.observe.tracing import configure_tracing

        configure_tracing()
    if settings.api_key is not None:
        logger.info("Using the Dessert API at %s with key %s", settings.base_url, settings.api_key.fingerprint())
    elif (warning := settings.missing_key_warning()) is not None:
        logger.warning(warning)
    if sys.stdin.isatty():
        sys.stderr.write(TTY_HINT + "\n")
    keep_start_up_heap()
    gc.enable()
    with _wire() as (wire_in, wire_out):
        pending = _Pending()
        stdin = _Stdin(wire_in, pending, drain_timeout_s=settings.timeout_s + 5.0)
        anyio.run(run_stdio, server, stdin, _Stdout(wire_out, pending))


@functools.cache  # once per process
def exit_on_ctrl_c() -> None:
    """Make Ctrl+C end the process at once (exit 130), as SIGTERM does, whichever thread the kernel hands it to.

    A Python-level handler runs only in the main thread, which sits in the event loop's wait while another thread
    (a write to stdout, the sandbox) may take the signal: the Ctrl+C would then be lost. So every thread started
    after this blocks SIGINT, and one thread waits for it. Call it before starting any thread.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def wait() -> None:
        signal.sigwait({signal.SIGINT})
        os._exit(130)

    threading.Thread(target=wait, name="dessert-mcp-ctrl-c", daemon=True).start()


@contextlib.contextmanager
def _wire() -> Iterator[tuple[int, int]]:
    """The protocol's stdin and stdout on private descriptors, with fd 0 at the null device and fd 1 at stderr.

    What the SDK's stdio transport does for the process's own streams and skips for streams handed to it: whatever
    else reads fd 0 or writes fd 1 (a child process, a stray print) can then neither take nor corrupt the protocol.
    """
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        yield wire_in, wire_out
    finally:
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)
        os.close(wire_out)
        os.close(wire_in)


# A 2026-07-28 client's notification stream: answered only when the server tears it down, so never a call to wait for.
_STREAM_METHOD: Final = "subscriptions/listen"
# How the SDK serialises an answer (a JSON-RPC response or error), read up to its id; any other spelling is parsed.
_ANSWER: Final = re.compile(r'\{"jsonrpc":"2\.0","id":(-?\d+|"(?:[^"\\]|\\.)*"),"(?:result|error)":')


class _Pending:
    """Request ids delivered to the SDK and not yet answered (notification streams aside)."""

    def __init__(self) -> None:
        # By the SDK's correlation key ("7" and 7 are one id), counted: an id sent twice is answered twice.
        self._ids: Counter[int | str] = Counter()
        self._emptied: anyio.Event | None = None

    def __bool__(self) -> bool:
        return bool(self._ids)

    def note_request(self, line: str) -> None:
        """Note one line of the client's input as the SDK reads it: validated as one JSON-RPC message, by its own rule.

        It drops what fails without a word (a batch, a float or object id, a method that is not a string), so none of
        that is waited for; an object id even reads as a notification.
        """
        from mcp.types import JSONRPCNotification, JSONRPCRequest, jsonrpc_message_adapter

        try:
            message = jsonrpc_message_adapter.validate_json(line, by_name=False)
        except ValueError:
            return
        if isinstance(message, JSONRPCRequest) and message.method != _STREAM_METHOD:
            self._ids[_correlation_key(message.id)] += 1
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            # The client gave up on a request: the server sends it no answer, so it is no longer waited for.
            params = message.params or {}
            if "requestId" in params:
                self._answered(params["requestId"])

    def note_answer(self, line: str) -> None:
        """Note one line the server wrote; only an answer's id matters, so a full parse is the rare case."""
        if found := _ANSWER.match(line):
            self._answered(json.loads(found[1]))
            return
        try:
            answer = json.loads(line)
        except ValueError:
            return
        if isinstance(answer, dict) and ("result" in answer or "error" in answer):
            self._answered(answer.get("id"))

    def _answered(self, request_id: object) -> None:
        if not isinstance(request_id, int | str) or isinstance(request_id, bool):
            return
        key = _correlation_key(request_id)
        self._ids[key] -= 1
        if self._ids[key] <= 0:
            del self._ids[key]
        if not self._ids and self._emptied is not None:
            self._emptied.set()

    async def wait_empty(self) -> None:
        """Return once every request delivered has been answered."""
        while self._ids:
            self._emptied = anyio.Event()
            await self._emptied.wait()


def _correlation_key(request_id: int | str) -> int | str:
    """The SDK correlates "7" and 7 as one id, as the TypeScript SDK does: a string that reads as an int is that int."""
    try:
        return int(request_id)
    except ValueError:
        return request_id


class _Stdin:
    """The client's input as the SDK's stdio transport reads it, one line at a time, read on the event loop.

    Decoded and split as the SDK reads the process's stdin (`TextIOWrapper`: UTF-8 with bad bytes replaced, a line
    ending at \\r, \\n or \\r\\n), but with plain `os.read` under it: on a terminal a buffered reader reads again after
    the EOF that ended an unterminated last line (another Ctrl+D), and a read error would drop what it had buffered.
    At the end of the input it reports the end only once every request it delivered has been answered, or
    `drain_timeout_s` has passed.
    """

    def __init__(self, fd: int, pending: _Pending, *, drain_timeout_s: float) -> None:
        self._fd = fd
        self._pending = pending
        self._drain_timeout_s = drain_timeout_s
        self._decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")("replace"), translate=True)
        self._lines: deque[str] = deque()
        self._partial: list[str] = []
        self._ended = False
        self._pollable = True

    def __aiter__(self) -> _Stdin:
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            if self._ended:
                with anyio.move_on_after(self._drain_timeout_s):
                    await self._pending.wait_empty()
                raise StopAsyncIteration
            self._split(await self._read())
        line = self._lines.popleft()
        self._pending.note_request(line)
        return line

    def _split(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk, final=not chunk)
        if "\n" in text:
            *complete, rest = "".join([*self._partial, text]).split("\n")
            self._lines.extend(line + "\n" for line in complete)
            self._partial = [rest]
        else:
            self._partial.append(text)
        if not chunk:  # the end: an unterminated last line is delivered too
            self._ended = True
            if last := "".join(self._partial):
                self._lines.append(last)
            self._partial = []

    async def _read(self) -> bytes:
        if self._pollable:
            try:
                await anyio.wait_readable(self._fd)
            except OSError:  # a regular file or the null device, which the event loop cannot watch: never blocks
                self._pollable = False
        try:
            return os.read(self._fd, _CHUNK)
        except OSError:  # ends the input; what was read before it is still delivered
            return b""


class _Stdout:
    """The server's output as the SDK's stdio transport writes it: each message, one line, noted once written.

    A line that fits a pipe's atomic write, to a pipe or socket with room for it, is written on the event loop; any
    other write runs in a worker thread, so a client slow to read never stalls the loop (and its reading of stdin).
    """

    def __init__(self, fd: int, pending: _Pending) -> None:
        self._fd = fd
        self._pending = pending
        self._open = True
        mode = os.fstat(fd).st_mode
        self._room: select.poll | None = None
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            self._room = select.poll()
            self._room.register(fd, select.POLLOUT)

    async def write(self, line: str) -> int:
        data = line.encode()
        if self._open:
            if len(data) <= select.PIPE_BUF and self._room is not None and self._room.poll(0):
                self._open = _write_all(self._fd, data)  # room for it, or the reader is gone: cannot block
            else:
                self._open = await anyio.to_thread.run_sync(_write_all, self._fd, data)
        self._pending.note_answer(line)  # written, or never will be: either way not to wait for
        return len(line)

    async def flush(self) -> None:
        """Each write is whole already."""


def _write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the reader went away; the rest is dropped, so the server never blocks or fails on it
        return False
    return True
