"""Integration: `dessert-mcp` as a real stdio subprocess, against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import ErrorData, Implementation, JSONRPCError, JSONRPCResponse, TextContent

from dessert_mcp.stdio import _ANSWER, _Pending, _Stdin, _Stdout
from tests.support import STARTUP_TIMEOUT_S
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.measured import host_default_env

SERVER = [sys.executable, "-m", "dessert_mcp"]


def _env(sandbox: ThreadedFaultySandbox, **extra: str) -> dict[str, str]:
    return host_default_env() | {
        "DESSERT_API_KEY": CANARY_KEY,
        "DESSERT_API_BASE_URL": sandbox.url,
        "DESSERT_MCP_LOG_LEVEL": "DEBUG",
        **extra,
    }


def _params(env: dict[str, str], *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], *args], env=env)


async def test_a_real_stdio_session_lists_and_calls_both_tools(canary_sandbox: ThreadedFaultySandbox) -> None:
    async with Client(_params(_env(canary_sandbox))) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        balance = await client.call_tool("dessert.get_balance", {})
        usage = await client.call_tool("dessert_get_usage", {"limit": 3})
    assert names == ["dessert_get_balance", "dessert_get_usage", "dessert_get_spend"]
    assert balance.structured_content is not None
    assert balance.structured_content["credits_balance"] == 205
    assert usage.structured_content is not None
    assert len(usage.structured_content["recent_transactions"]) == 3


async def test_claude_desktop_is_shown_underscore_names_over_stdio(canary_sandbox: ThreadedFaultySandbox) -> None:
    client = Client(_params(_env(canary_sandbox)), client_info=Implementation(name="claude-ai", version="0.14"))
    async with client:
        names = [t.name for t in (await client.list_tools()).tools]
    assert names == ["dessert_get_balance", "dessert_get_usage", "dessert_get_spend"]


async def test_the_embedded_sandbox_needs_no_account() -> None:
    env = host_default_env()
    async with Client(_params(env, "--sandbox")) as client:
        result = await client.call_tool("dessert.get_balance", {})
    assert result.structured_content is not None
    assert result.structured_content["credits_balance"] == 205


async def test_without_a_key_the_server_starts_lists_tools_and_explains_each_call(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    env = _env(canary_sandbox)
    del env["DESSERT_API_KEY"]
    async with Client(_params(env)) as client:
        listed = await client.list_tools()
        result = await client.call_tool("dessert.get_balance", {})
    assert len(listed.tools) == 3
    assert result.is_error is True
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert "DESSERT_API_KEY is not set" in block.text


class RawStdioServer:
    """The server process driven byte by byte, to see exactly what it writes to stdout and stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout_lines: list[bytes] = []
        self._next_id = 0

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params or {}})
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(
                self.process.stdout.readline(), timeout=STARTUP_TIMEOUT_S
            )  # the first: start-up
            assert line, "the server closed stdout"
            self.stdout_lines.append(line)
            message: dict[str, Any] = json.loads(line)
            if message.get("id") == self._next_id:
                return message


async def _start_raw(env: dict[str, str]) -> RawStdioServer:
    process = await asyncio.create_subprocess_exec(
        *SERVER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return RawStdioServer(process)


async def test_every_line_on_stdout_is_a_json_rpc_message_and_the_key_appears_nowhere(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    # Three attempts: a 500 is retried, so it must persist to reach the agent.
    canary_sandbox.add_fault(path="/v1/usage", status=500, body=f"boom {CANARY_KEY}", times=3)
    server = await _start_raw(_env(canary_sandbox))
    init = await server.request(
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}},
    )
    assert init["result"]["serverInfo"]["name"] == "dessert-mcp"
    await server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    await server.request("tools/list")
    results = [
        await server.request("tools/call", {"name": "dessert.get_balance", "arguments": {}}),
        await server.request("tools/call", {"name": "dessert.get_usage", "arguments": {}}),
        await server.request("tools/call", {"name": "dessert.get_usage", "arguments": {"limit": 99}}),
        await server.request("tools/call", {"name": "dessert.nope", "arguments": {}}),
    ]
    assert server.process.stdin is not None
    server.process.stdin.close()
    rest, stderr = await asyncio.wait_for(server.process.communicate(), timeout=10)
    stdout = b"".join(server.stdout_lines) + rest

    for line in stdout.splitlines():
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        assert "id" in message or "method" in message
    assert results[0]["result"]["isError"] is False
    assert results[1]["result"]["isError"] is True  # the injected 500, echoed sanitized and redacted
    assert results[2]["result"]["isError"] is True
    assert_no_secret(stdout.decode())
    assert_no_secret(stderr.decode())
    assert "boom [REDACTED]" in json.dumps(results[1])
    assert server.process.returncode == 0


async def test_the_server_exits_promptly_when_stdin_closes(canary_sandbox: ThreadedFaultySandbox) -> None:
    server = await _start_raw(_env(canary_sandbox))
    await server.request(
        "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    )
    assert server.process.stdin is not None
    server.process.stdin.close()
    await asyncio.wait_for(server.process.wait(), timeout=5)
    assert server.process.returncode == 0


async def test_an_open_listen_stream_does_not_keep_the_server_alive_after_stdin_closes(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    # A 2026-07-28 client (the MCP Inspector's CLI, for one) opens subscriptions/listen before its call; the stream
    # is answered only when the server stops, so waiting for it held the process for the whole drain deadline.
    server = await _start_raw(_env(canary_sandbox))
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    await server.send(
        {
            "jsonrpc": "2.0",
            "id": "listen",
            "method": "subscriptions/listen",
            "params": {"_meta": meta, "notifications": {"tools_list_changed": True}},
        }
    )
    listed = await server.request("tools/list", {"_meta": meta})
    assert [t["name"] for t in listed["result"]["tools"]] == [
        "dessert_get_balance",
        "dessert_get_usage",
        "dessert_get_spend",
    ]
    assert server.process.stdin is not None
    server.process.stdin.close()
    await asyncio.wait_for(server.process.wait(), timeout=5)  # the drain deadline is 30 s
    assert server.process.returncode == 0


async def test_a_cancelled_call_does_not_keep_the_server_alive_after_stdin_closes(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    # A cancelled request gets no answer: waiting for one held the process for the whole drain deadline.
    server = await _start_raw(_env(canary_sandbox))
    await server.request(
        "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    )
    await server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    seen = canary_sandbox.stats()["requests"].get("/v1/balance", 0)
    canary_sandbox.add_fault(path="/v1/balance", hang=True)
    await server.send(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "dessert.get_balance", "arguments": {}}}
    )
    async with asyncio.timeout(10):
        await _until(lambda: canary_sandbox.stats()["requests"].get("/v1/balance", 0) > seen)  # in flight upstream
    await server.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}})
    assert server.process.stdin is not None
    server.process.stdin.close()
    await asyncio.wait_for(server.process.wait(), timeout=5)  # the drain deadline is 30 s
    assert server.process.returncode == 0


# What the SDK drops without an answer: a batch, ids that are floats, objects, booleans or null, a method that is not
# a string, params that are not an object, no "jsonrpc": "2.0".
UNANSWERED = [
    [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"},
    {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"},
    {"jsonrpc": "2.0", "id": 2, "method": ["tools/list"]},
    {"jsonrpc": "2.0", "id": 3, "method": "ping", "params": 5},
    {"id": 4, "method": "ping"},
]


async def test_requests_the_sdk_never_answers_do_not_keep_the_server_alive_after_stdin_closes(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    # The relay waited for each of these until the drain deadline (35 s), for an answer the SDK never sends.
    server = await _start_raw(_env(canary_sandbox))
    for message in UNANSWERED:
        assert server.process.stdin is not None
        server.process.stdin.write(json.dumps(message).encode() + b"\n")
    assert (await server.request("ping"))["result"] == {}
    assert server.process.stdin is not None
    server.process.stdin.close()
    _, stderr = await asyncio.wait_for(server.process.communicate(), timeout=5)
    assert server.process.returncode == 0
    # A tools/list with an object id reads as a notification: no answer, and not the SDK-changed alarm of listing.py.
    assert b"ERROR" not in stderr, stderr.decode()
    assert all(json.loads(line)["id"] == 1 for line in server.stdout_lines)


def test_calls_in_a_file_on_stdin_are_all_answered(canary_sandbox: ThreadedFaultySandbox, tmp_path: Path) -> None:
    # A regular file cannot be watched by the event loop (epoll refuses it), and reading it never blocks.
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    script = tmp_path / "calls.jsonl"
    script.write_bytes(
        _line({"id": 1, "method": "initialize", "params": init})
        + _line({"method": "notifications/initialized"})
        + b"".join(
            _line({"id": i, "method": "tools/call", "params": {"name": "dessert.get_balance", "arguments": {}}})
            for i in range(2, 12)
        )
    )
    with script.open("rb") as stdin:
        done = subprocess.run(SERVER, stdin=stdin, capture_output=True, env=_env(canary_sandbox), timeout=60)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    # Calls run concurrently, so their answers may come in any order: each once, none missing.
    assert sorted(a["id"] for a in answers if "result" in a) == list(range(1, 12)), done.stderr.decode()[-2000:]
    assert done.returncode == 0


# What a stdio server launched as hosts launch it (no argument) may load of the optional wings before its first tool
# call: the ledger's poller, which runs from the start. Nothing of the command line's other commands or of the HTTP
# and auth modes' settings: with no argument there is no parser to build.
WINGS = ("dessert_mcp.alerts", "dessert_mcp.auth", "dessert_mcp.http", "dessert_mcp.ledger", "dessert_mcp.observe")
WINGS_AT_START = {"dessert_mcp.ledger", "dessert_mcp.ledger.poller", "dessert_mcp.observe"}
NOT_BEFORE_FIRST_CALL = (
    "dessert_mcp.storage",
    "dessert_mcp.sandbox",
    "dessert_mcp.cli.hosts",
    "dessert_mcp.cli.accounts",
    "dessert_mcp.cli.ledger",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
)


def test_answering_initialize_and_tools_list_loads_no_wing_and_no_database_library(
    canary_sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    script = tmp_path / "calls.jsonl"
    script.write_bytes(
        _line({"id": 1, "method": "initialize", "params": init})
        + _line({"method": "notifications/initialized"})
        + _line({"id": 2, "method": "tools/list"})
    )
    # The modules loaded when the server exits, after answering both: it exits at the end of its input.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('loaded:', *sorted(sys.modules), file=sys.stderr))\n"
        "from dessert_mcp.cli import main\n"
        "main([])\n"
    )
    with script.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-c", code], stdin=stdin, capture_output=True, env=_env(canary_sandbox), timeout=60
        )
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [1, 2], done.stderr.decode()[-2000:]
    loaded = set(done.stderr.decode().rpartition("loaded: ")[2].split())
    assert "dessert_mcp.tools" in loaded
    wings = {m for m in loaded if m.startswith(tuple(f"{wing}." for wing in WINGS)) or m in WINGS}
    assert wings <= WINGS_AT_START, sorted(wings - WINGS_AT_START)
    assert not {
        m
        for m in loaded
        if m.split(".")[0] in NOT_BEFORE_FIRST_CALL
        or m in NOT_BEFORE_FIRST_CALL
        or m.startswith(("dessert_mcp.storage.", "dessert_mcp.sandbox."))
    }


def test_with_nothing_on_stdin_the_server_exits_at_once(canary_sandbox: ThreadedFaultySandbox) -> None:
    done = subprocess.run(SERVER, stdin=subprocess.DEVNULL, capture_output=True, env=_env(canary_sandbox), timeout=60)
    assert done.stdout == b""
    assert done.returncode == 0


async def _until(condition: Callable[[], bool]) -> None:
    """Poll state in another thread (the sandbox) until it holds; callers bound it with a timeout."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_missing_key_is_warned_about_on_stderr_at_start(canary_sandbox: ThreadedFaultySandbox) -> None:
    env = _env(canary_sandbox)
    del env["DESSERT_API_KEY"]
    server = await _start_raw(env)
    await server.request(
        "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    )
    assert server.process.stdin is not None
    server.process.stdin.close()
    _, stderr = await asyncio.wait_for(server.process.communicate(), timeout=10)
    assert "WARNING" in stderr.decode()
    assert "DESSERT_API_KEY is not set" in stderr.decode()


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n"


def _deliver(pending: _Pending, data: bytes) -> list[str]:
    """`data` as the client's whole input, read by the server's stdin stream: the lines it hands the SDK."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)

    async def read_all() -> list[str]:
        return [line async for line in _Stdin(read, pending, drain_timeout_s=0)]

    try:
        return anyio.run(read_all)
    finally:
        os.close(read)


def _answer(message: dict[str, Any]) -> str:
    return _line(message).decode()


def test_after_eof_the_relay_waits_for_each_call_until_answered_or_cancelled_and_never_for_a_listen_stream() -> None:
    pending = _Pending()
    _deliver(
        pending,
        _line({"id": 1, "method": "tools/call", "params": {}})
        + _line({"id": "two", "method": "tools/call", "params": {}})
        + _line({"id": "listen", "method": "subscriptions/listen", "params": {}})
        + _line({"method": "notifications/initialized"}),
    )
    assert pending

    pending.note_answer(_answer({"id": 1, "result": {}}))
    assert pending  # "two" is still in flight
    _deliver(pending, _line({"method": "notifications/cancelled", "params": {"requestId": "two"}}))
    assert not pending  # nothing left: the cancelled call gets no answer, the listen stream never ends

    _deliver(pending, _line({"method": "notifications/cancelled", "params": {"requestId": 99}}))
    _deliver(pending, _line({"method": "notifications/cancelled"}))  # malformed: ignored
    _deliver(pending, b"not json\n")
    for message in UNANSWERED:
        _deliver(pending, json.dumps(message).encode() + b"\n")
    assert not pending


def test_the_relay_matches_ids_and_lines_as_the_sdk_does() -> None:
    pending = _Pending()
    _deliver(pending, _line({"id": 7, "method": "tools/call", "params": {}}))
    _deliver(pending, _line({"method": "notifications/cancelled", "params": {"requestId": "7"}}))
    assert not pending  # "7" and 7 are one id to the SDK

    _deliver(pending, _line({"id": 1, "method": "ping"}) * 2)  # one id twice: two answers to wait for
    pending.note_answer(_answer({"id": 1, "result": {}}))
    assert pending
    pending.note_answer(_answer({"id": 1, "result": {}}))
    assert not pending

    _deliver(pending, _line({"id": 2, "method": "ping"}).replace(b"\n", b"\r") + _line({"id": 3, "method": "ping"}))
    pending.note_answer(_answer({"id": 2, "result": {}}))
    assert pending  # a bare \r ends a line for the SDK: 3 is a request of its own
    pending.note_answer(_answer({"id": 3, "result": {}}))
    _deliver(pending, _line({"method": "notifications/cancelled", "params": {"requestId": {"x": 1}}}))
    assert not pending


def test_the_stdin_stream_hands_the_sdk_the_lines_its_own_reader_would() -> None:
    data = "é\r\n1\r2\n".encode() + b"\xff\n" + "€".encode()[:2] + b"3\r"
    expected = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").readlines()
    assert _deliver(_Pending(), data) == expected == ["é\n", "1\n", "2\n", "\ufffd\n", "\ufffd3\n"]


async def test_a_line_read_in_pieces_is_handed_on_whole_once_it_ends() -> None:
    read, write = os.pipe()
    lines: list[str] = []

    async def sdk_reading() -> None:
        async for line in _Stdin(read, _Pending(), drain_timeout_s=0):
            lines.append(line)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sdk_reading)
            # A character and a \r\n split between reads, each read once the reader waits for more.
            for piece in (b'{"id": ', '1, "é'.encode()[:-1], 'é"}'.encode()[-3:] + b"\r", b"\n{}\n"):
                await anyio.wait_all_tasks_blocked()
                os.write(write, piece)
            await anyio.wait_all_tasks_blocked()
            os.close(write)
    finally:
        os.close(read)
    assert lines == ['{"id": 1, "é"}\n', "{}\n"]


class _Watched(_Pending):
    """Pending answers that say when the stdin stream starts waiting for them."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_for = anyio.Event()

    async def wait_empty(self) -> None:
        self.waited_for.set()
        await super().wait_empty()


async def test_at_the_end_of_the_input_the_stdin_stream_waits_for_the_answers_it_owes() -> None:
    pending = _Watched()
    read, write = os.pipe()
    os.write(write, _line({"id": 1, "method": "tools/call", "params": {}}))
    os.close(write)
    ended = anyio.Event()

    async def sdk_reading() -> None:
        async for _ in _Stdin(read, pending, drain_timeout_s=60):
            pass
        ended.set()

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sdk_reading)
                await pending.waited_for.wait()  # the input has ended, and the call read from it is not answered
                await anyio.wait_all_tasks_blocked()
                assert not ended.is_set()
                pending.note_answer(_answer({"id": 1, "result": {}}))
                await ended.wait()
    finally:
        os.close(read)


def test_an_answer_never_sent_is_waited_for_until_the_deadline_only() -> None:
    pending = _Pending()
    assert _deliver(pending, _line({"id": 1, "method": "tools/call", "params": {}}))  # drain deadline 0
    assert pending


def test_answers_as_the_sdk_writes_them_are_noted_string_ids_and_all() -> None:
    pending = _Pending()
    ids: list[int | str] = [5, -2, 'say "hi"\\', "7"]
    for request_id in ids:
        _deliver(pending, _line({"id": request_id, "method": "ping"}))
    for request_id in ids[:3]:
        written = JSONRPCResponse(jsonrpc="2.0", id=request_id, result={}).model_dump_json(
            by_alias=True, exclude_unset=True
        )
        assert _ANSWER.match(written), "the SDK spells answers differently now: each is parsed whole (slower)"
        pending.note_answer(written + "\n")
    assert pending
    error = JSONRPCError(jsonrpc="2.0", id=7, error=ErrorData(code=-32600, message="no"))
    pending.note_answer(error.model_dump_json(by_alias=True, exclude_unset=True) + "\n")
    assert not pending
    # What the server writes that is no answer leaves the count alone.
    pending.note_answer('{"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{}}\n')
    pending.note_answer("not json\n")
    assert not pending


def test_a_write_to_a_reader_that_went_away_is_dropped_and_still_counts_as_answered() -> None:
    pending = _Pending()
    _deliver(pending, _line({"id": 1, "method": "ping"}) + _line({"id": 2, "method": "ping"}))
    read, write = os.pipe()
    os.close(read)
    stdout = _Stdout(write, pending)

    async def answer_both() -> None:
        for request_id in (1, 2):
            await stdout.write(_answer({"id": request_id, "result": {}}))
            await stdout.flush()

    try:
        anyio.run(answer_both)
    finally:
        os.close(write)
    assert not pending


async def test_a_client_slow_to_read_never_stalls_the_server() -> None:
    read, write = os.pipe()
    os.set_blocking(write, False)
    filled = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filled += os.write(write, b"x" * 4096)
    os.set_blocking(write, True)
    stdout, written, checked = _Stdout(write, _Pending()), anyio.Event(), threading.Event()
    line = _answer({"id": 1, "result": {}})

    def client_reads() -> None:
        checked.wait(timeout=60)  # the bound lets a loop stalled by the write go on, to fail below, not hang
        left = filled
        while left:
            left -= len(os.read(read, min(left, 65536)))

    async def answer() -> None:
        await stdout.write(line)
        written.set()

    client = threading.Thread(target=client_reads, daemon=True)
    client.start()
    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(answer)
                await anyio.wait_all_tasks_blocked()
                answered_before_the_client_read = written.is_set()
                checked.set()
                await written.wait()
        assert not answered_before_the_client_read  # the event loop ran on while the answer waited for room
        client.join(timeout=60)
        assert os.read(read, 65536) == line.encode()
    finally:
        checked.set()
        os.close(read)
        os.close(write)


async def test_answers_of_any_length_reach_a_file_whole(tmp_path: Path) -> None:
    lines = [_answer({"id": 1, "result": {"text": "é" * 10_000}}), _answer({"id": 2, "result": {}})]
    with (tmp_path / "out").open("wb") as out:
        stdout = _Stdout(out.fileno(), _Pending())
        for line in lines:
            await stdout.write(line)
    assert (tmp_path / "out").read_text() == "".join(lines)


def _read_all(fd: int) -> list[str]:
    async def read_all() -> list[str]:
        return [line async for line in _Stdin(fd, _Pending(), drain_timeout_s=0)]

    return anyio.run(read_all)


def test_on_a_terminal_one_ctrl_d_after_an_unterminated_line_ends_the_input() -> None:
    controller, terminal = pty.openpty()  # canonical mode: Ctrl+D ends a partial line, then (alone) the input
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(_read_all(terminal)), daemon=True)
    try:
        os.write(controller, b'{"id": 1}\n{"id": 2}\x04\x04')
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive(), "the reader waited for another Ctrl+D"
        assert lines == ['{"id": 1}\n', '{"id": 2}']
    finally:
        os.write(controller, b"\x04")  # lets a stuck reader go
        os.close(controller)
        os.close(terminal)


def test_a_read_error_still_hands_on_the_bytes_read_before_it() -> None:
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    os.write(terminal, b"complete\npartial")
    os.close(terminal)  # the controller's next read after the buffered bytes fails with EIO
    try:
        assert _read_all(controller) == ["complete\n", "partial"]
    finally:
        os.close(controller)
