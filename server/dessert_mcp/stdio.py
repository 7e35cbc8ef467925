"""Serving MCP over stdio: answer every call already read before exiting on EOF, and stop at once on Ctrl+C.

The SDK ends its stdio session as soon as stdin closes, dropping calls still in flight; scripts that write their
requests and close stdin would lose answers. So stdin and stdout are relayed through pipes here: the relay notes
each request id it forwards and each response id the server writes, and holds the server's stdin open after the
real EOF until every forwarded request has been answered (or the call deadline has passed). A request the client
cancelled is not waited for (it gets no answer), nor a modern client's `subscriptions/listen` stream (it stays open
until the server stops).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Final

import anyio

from dessert_mcp.config import Settings
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
    from dessert_mcp.observe.tracing import configure_tracing
    from dessert_mcp.tools import build_server

    server = build_server(settings)
    # After build_server: the SDK sets up logging of its own when a server is built; this replaces it.
    configure_logging_for(settings)
    configure_tracing()
    if settings.api_key is not None:
        logger.info("Using the Dessert API at %s with key %s", settings.base_url, settings.api_key.fingerprint())
    elif (warning := settings.missing_key_warning()) is not None:
        logger.warning(warning)
    if sys.stdin.isatty():
        sys.stderr.write(TTY_HINT + "\n")
    gc.freeze()  # the start-up heap lives as long as the process: keep full collections from walking it
    gc.enable()
    with _relay(settings.timeout_s + 5.0):
        anyio.run(server.run_stdio_async)


@functools.cache  # once per process
def exit_on_ctrl_c() -> None:
    """Make Ctrl+C end the process at once (exit 130), as SIGTERM does, whichever thread the kernel hands it to.

    A Python-level handler runs only in the main thread, which sits in the event loop's wait while another thread
    (the SDK's stdin reader, the relay, the sandbox) may take the signal: the Ctrl+C would then be lost. So every
    thread started after this blocks SIGINT, and one thread waits for it. Call it before starting any thread.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def wait() -> None:
        signal.sigwait({signal.SIGINT})
        os._exit(130)

    threading.Thread(target=wait, name="dessert-mcp-ctrl-c", daemon=True).start()


# A 2026-07-28 client's notification stream: answered only when the server tears it down, so never a call to wait for.
_STREAM_METHOD: Final = "subscriptions/listen"


class _Pending:
    """Request ids forwarded to the server and not yet answered (notification streams aside)."""

    def __init__(self) -> None:
        # By the SDK's correlation key ("7" and 7 are one id), counted: an id sent twice is answered twice.
        self._ids: Counter[int | str] = Counter()
        self._changed = threading.Condition()

    def note(self, line: bytes, *, request: bool) -> None:
        if not request:
            # The server's own output, one message per line as the SDK serialised it: only an answer's id matters,
            # and json.loads finds it for a tenth of what validating a whole 10 KB result costs on every response.
            try:
                answer = json.loads(line)
            except ValueError:
                return
            if isinstance(answer, dict) and ("result" in answer or "error" in answer):
                self._answered(answer.get("id"))
            return
        # The client's input, read by the SDK's own rule for stdin: UTF-8 text with bad bytes replaced, a line ending
        # at \r, \n or \r\n, each validated as one JSON-RPC message. It drops what fails without a word (a batch, a
        # float or object id, a method that is not a string), so none of that is waited for; an object id even reads
        # as a notification.
        from mcp.types import JSONRPCNotification, JSONRPCRequest, jsonrpc_message_adapter

        for text in io.StringIO(line.decode("utf-8", "replace"), newline=None):
            try:
                message = jsonrpc_message_adapter.validate_json(text, by_name=False)
            except ValueError:
                continue
            if isinstance(message, JSONRPCRequest) and message.method != _STREAM_METHOD:
                with self._changed:
                    self._ids[_correlation_key(message.id)] += 1
            elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
                # The client gave up on a request: the server sends it no answer, so it is no longer waited for.
                params = message.params or {}
                if "requestId" in params:
                    self._answered(params["requestId"])

    def _answered(self, request_id: object) -> None:
        if not isinstance(request_id, int | str) or isinstance(request_id, bool):
            return
        key = _correlation_key(request_id)
        with self._changed:
            self._ids[key] -= 1
            if self._ids[key] <= 0:
                del self._ids[key]
            self._changed.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every request is answered, for `timeout_s` at most; whether they all were."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._ids, timeout=timeout_s)


def _correlation_key(request_id: int | str) -> int | str:
    """The SDK correlates "7" and 7 as one id, as the TypeScript SDK does: a string that reads as an int is that int."""
    try:
        return int(request_id)
    except ValueError:
        return request_id


def _lines(fd: int) -> Iterator[bytes]:
    """Complete lines read from `fd` (and a final unterminated one), until EOF or an error.

    Plain `os.read`, not a buffered file: on a terminal a buffered reader reads again after the EOF that ended an
    unterminated last line (another Ctrl+D), and a read error would drop the bytes it had buffered.
    """
    buffer = b""
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line + b"\n"


def _write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the reader went away; the relay keeps draining so the server never blocks
        return False
    return True


@contextlib.contextmanager
def _relay(drain_timeout_s: float) -> Iterator[None]:
    """Put pipes behind fds 0 and 1 for the duration, relayed to the real stdin and stdout by two threads."""
    real_in, real_out = os.dup(0), os.dup(1)
    server_in, relay_in = os.pipe()
    relay_out, server_out = os.pipe()
    os.dup2(server_in, 0)
    os.dup2(server_out, 1)
    os.close(server_in)
    pending = _Pending()
    # Marks the end of what the server wrote: the server's own copy of the stdout pipe is never closed.
    end = b"dessert-mcp-relay-end-" + secrets.token_hex(8).encode() + b"\n"

    def pump_in() -> None:
        for line in _lines(real_in):
            pending.note(line, request=True)
            if not _write_all(relay_in, line):
                break
        pending.wait_empty(drain_timeout_s)
        os.close(relay_in)

    def pump_out() -> None:
        alive = True
        for line in _lines(relay_out):
            if line == end:
                return
            pending.note(line, request=False)
            alive = alive and _write_all(real_out, line)

    threads = [threading.Thread(target=f, name=f.__name__, daemon=True) for f in (pump_in, pump_out)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        _write_all(server_out, end)
        threads[1].join(timeout=5)
        os.dup2(real_out, 1)
        os.close(server_out)
