"""Integration: `dessert-mcp` as a real stdio subprocess, against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
import threading
import tty
from collections.abc import Callable
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import Implementation, TextContent

from dessert_mcp.stdio import _lines, _Pending
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
    assert names == ["dessert.get_balance", "dessert.get_usage"]
    assert balance.structured_content is not None
    assert balance.structured_content["credits_balance"] == 205
    assert usage.structured_content is not None
    assert len(usage.structured_content["recent_transactions"]) == 3


async def test_claude_desktop_is_shown_underscore_names_over_stdio(canary_sandbox: ThreadedFaultySandbox) -> None:
    client = Client(_params(_env(canary_sandbox)), client_info=Implementation(name="claude-ai", version="0.14"))
    async with client:
        names = [t.name for t in (await client.list_tools()).tools]
    assert names == ["dessert_get_balance", "dessert_get_usage"]


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
    assert len(listed.tools) == 2
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
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout=20)
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
    assert [t["name"] for t in listed["result"]["tools"]] == ["dessert.get_balance", "dessert.get_usage"]
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


def test_after_eof_the_relay_waits_for_each_call_until_answered_or_cancelled_and_never_for_a_listen_stream() -> None:
    pending = _Pending()
    pending.note(_line({"id": 1, "method": "tools/call", "params": {}}), request=True)
    pending.note(_line({"id": "two", "method": "tools/call", "params": {}}), request=True)
    pending.note(_line({"id": "listen", "method": "subscriptions/listen", "params": {}}), request=True)
    pending.note(_line({"method": "notifications/initialized"}), request=True)
    assert not pending.wait_empty(0)

    pending.note(_line({"id": 1, "result": {}}), request=False)
    assert not pending.wait_empty(0)  # "two" is still in flight
    pending.note(_line({"method": "notifications/cancelled", "params": {"requestId": "two"}}), request=True)
    assert pending.wait_empty(0)  # nothing left: the cancelled call gets no answer, the listen stream never ends

    pending.note(_line({"method": "notifications/cancelled", "params": {"requestId": 99}}), request=True)
    pending.note(_line({"method": "notifications/cancelled"}), request=True)  # malformed: ignored
    pending.note(b"not json\n", request=True)
    for message in UNANSWERED:
        pending.note(json.dumps(message).encode() + b"\n", request=True)
    assert pending.wait_empty(0)


def test_the_relay_matches_ids_and_lines_as_the_sdk_does() -> None:
    pending = _Pending()
    pending.note(_line({"id": 7, "method": "tools/call", "params": {}}), request=True)
    pending.note(_line({"method": "notifications/cancelled", "params": {"requestId": "7"}}), request=True)
    assert pending.wait_empty(0)  # "7" and 7 are one id to the SDK

    pending.note(_line({"id": 1, "method": "ping"}) * 2, request=True)  # one id twice: two answers to wait for
    pending.note(_line({"id": 1, "result": {}}), request=False)
    assert not pending.wait_empty(0)
    pending.note(_line({"id": 1, "result": {}}), request=False)
    assert pending.wait_empty(0)

    pending.note(
        _line({"id": 2, "method": "ping"}).replace(b"\n", b"\r") + _line({"id": 3, "method": "ping"}), request=True
    )
    pending.note(_line({"id": 2, "result": {}}), request=False)
    assert not pending.wait_empty(0)  # a bare \r ends a line for the SDK: 3 is a request of its own
    pending.note(_line({"id": 3, "result": {}}), request=False)
    pending.note(_line({"method": "notifications/cancelled", "params": {"requestId": {"x": 1}}}), request=True)
    assert pending.wait_empty(0)


def test_on_a_terminal_one_ctrl_d_after_an_unterminated_line_ends_the_input() -> None:
    controller, terminal = pty.openpty()  # canonical mode: Ctrl+D ends a partial line, then (alone) the input
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(_lines(terminal)), daemon=True)
    try:
        os.write(controller, b'{"id": 1}\n{"id": 2}\x04\x04')
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive(), "the reader waited for another Ctrl+D"
        assert lines == [b'{"id": 1}\n', b'{"id": 2}']
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
        assert list(_lines(controller)) == [b"complete\n", b"partial"]
    finally:
        os.close(controller)
