"""Bad input on the MCP side: odd arguments, garbage on stdio, a closed stdin, SIGTERM mid-call, cancellation."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from dessert_mcp.cli.hosts import server_command
from tests.support import STARTUP_TIMEOUT_S
from tests.support.faults import Fault

from .conftest import Upstreams, connect, error_info, matrix_settings, result_text, settings_env

BALANCE = "dessert.get_balance"
USAGE = "dessert.get_usage"
# A call deadline longer than any test runs, and the bound on waiting for an event in another process (the
# machine may be busy): neither is what a test asserts.
NEVER_S = 3600.0
HANG_GUARD_S = 60.0

BAD_ARGUMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "wrong type": (USAGE, {"limit": "ten"}),
    "out of range": (USAGE, {"limit": 10_000}),
    "unknown argument": (BALANCE, {"account": "other"}),
    "huge string": (USAGE, {"since": "2026-" + "9" * 1_000_000}),
    "NUL byte": (USAGE, {"types": ["Deduction\x00"]}),
    "nested junk": (USAGE, {"types": [{"$ne": None}]}),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
async def test_bad_arguments_are_invalid_argument_errors_and_no_api_call(
    case: str, upstreams: Upstreams, tmp_path: Path
) -> None:
    upstreams.sandbox.reset()
    tool, arguments = BAD_ARGUMENTS[case]
    settings = matrix_settings(upstreams.sandbox.url, upstreams.key)
    async with connect("memory", settings, upstreams, tmp_path / "err") as client:
        result = await client.call_tool(tool, arguments)
        assert error_info(result)["code"] == "invalid_argument"
        assert len(result_text(result)) < 2000
        assert upstreams.sandbox.stats()["total"] == 0
        assert not (await client.call_tool(tool, {})).is_error


@pytest.mark.parametrize("transport", ["memory", "stdio", "http"])
async def test_a_cancelled_call_aborts_the_upstream_request(
    transport: str, upstreams: Upstreams, tmp_path: Path
) -> None:
    sandbox = upstreams.sandbox
    sandbox.reset()
    # A call deadline no test outlives: the hung request can end only by the cancellation.
    settings = replace(matrix_settings(sandbox.url, upstreams.key), timeout_s=NEVER_S)
    # Its own stdio process: the sandbox's open connections are counted, and a shared process keeps one alive.
    async with connect(transport, settings, upstreams, tmp_path / "err", own_process=True) as client:
        sandbox.add_fault(Fault(hang=True))
        gives_up = anyio.CancelScope()

        async def call() -> None:
            with gives_up:
                await client.call_tool(BALANCE, {})

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            reached = await _until(lambda: sandbox.stats()["total"] == 1)
            gives_up.cancel()  # the MCP client gives up on the call
            # The server aborts its request: the sandbox sees the connection closed.
            aborted = await _until(lambda: sandbox.stats()["open_connections"] == 0)
            if not aborted:
                sandbox.hang_up()  # end the request the server kept, so that the call and the server can end
        assert reached, f"the call did not reach the API within {HANG_GUARD_S:g} s"
        assert aborted, f"the API request was still open {HANG_GUARD_S:g} s after the client cancelled the call"
        with anyio.fail_after(HANG_GUARD_S):
            assert not (await client.call_tool(BALANCE, {})).is_error


async def _until(condition: Callable[[], bool], within_s: float = HANG_GUARD_S) -> bool:
    """Poll state in another thread (the sandbox) until it holds (True) or `within_s` has passed (False)."""
    with anyio.move_on_after(within_s):
        while True:
            if condition():
                return True
            await anyio.sleep(0.01)
    return False


@contextlib.asynccontextmanager
async def _spawned(upstreams: Upstreams, **overrides: Any) -> AsyncIterator[Process]:
    """`dessert-mcp` over stdio as a subprocess; killed if the block fails, so that a server that does not exit
    fails its test instead of holding it (leaving the block waits for the process to exit)."""
    command, args = server_command()
    env = settings_env(replace(matrix_settings(upstreams.sandbox.url, upstreams.key), **overrides))
    async with await anyio.open_process([command, *args], env=env, stderr=None) as process:
        try:
            yield process
        except BaseException:
            process.kill()
            raise


class Wire:
    """Raw JSON-RPC lines to and from a `dessert-mcp` subprocess."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._buffer = b""

    async def send(self, raw: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(raw)

    async def request(self, id_: int, method: str, params: dict[str, Any]) -> None:
        await self.send(json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}).encode() + b"\n")

    async def response(self, id_: int) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message: dict[str, Any] = json.loads(line)
                if message.get("id") == id_:
                    return message
            self._buffer += await self.process.stdout.receive()

    async def initialize(self) -> None:
        await self.request(
            0,
            "initialize",
            {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        )
        assert "result" in await self.response(0)
        await self.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')


async def test_malformed_stdio_lines_do_not_stop_the_server_answering_the_next_request(upstreams: Upstreams) -> None:
    upstreams.sandbox.reset()
    async with _spawned(upstreams) as process:
        wire = Wire(process)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await wire.initialize()
            for junk in (
                b"not json at all\n",
                b"\xff\xfe\x80\x81 invalid utf-8\n",
                b'{"jsonrpc": "2.0"}\n',
                b"[]\n",
                b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": "x"}\n',
                b'{"jsonrpc": "2.0", "id": 4, "method": "no/such/method", "params": {}}\n',
                b"\x00" * 64 + b"\n",
                b"{" * 5000 + b"\n",
            ):
                await wire.send(junk)
            await wire.request(9, "tools/call", {"name": BALANCE, "arguments": {}})
            answer = await wire.response(9)
        assert answer["result"]["isError"] is False
        assert answer["result"]["structuredContent"]["credits_balance"] > 0
        process.terminate()


async def test_the_server_exits_cleanly_when_stdin_closes(upstreams: Upstreams) -> None:
    async with _spawned(upstreams) as process:
        wire = Wire(process)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await wire.initialize()
        assert process.stdin is not None
        await process.stdin.aclose()
        with anyio.move_on_after(HANG_GUARD_S):
            await process.wait()
        assert process.returncode == 0, f"{HANG_GUARD_S:g} s after stdin closed: exit status {process.returncode}"


async def test_sigterm_during_a_call_ends_the_server_without_waiting_for_the_call(upstreams: Upstreams) -> None:
    sandbox = upstreams.sandbox
    sandbox.reset()
    sandbox.add_fault(Fault(hang=True))
    # The call would wait out a deadline no test outlives: the server ends only because of the SIGTERM.
    async with _spawned(upstreams, timeout_s=NEVER_S) as process:
        wire = Wire(process)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await wire.initialize()
            await wire.request(1, "tools/call", {"name": BALANCE, "arguments": {}})
            assert await _until(lambda: sandbox.stats()["total"] == 1), "the call did not reach the API"
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(HANG_GUARD_S):
            await process.wait()
        assert process.returncode is not None, f"the server was still running {HANG_GUARD_S:g} s after SIGTERM"
    sandbox.reset()
