"""What a hostile probe found, each pinned: obfuscated key echoes, answers lost on EOF, abandoned sessions,
readiness details, out-of-range numbers, an unsorted feed, and error texts that named the wrong cause."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx2
import pytest
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from dessert_mcp.cli.hosts import server_command
from dessert_mcp.client import DessertAPIError, DessertClient, retry_after
from dessert_mcp.config import Secret
from dessert_mcp.sandbox import SandboxAccount
from tests.support.api import assert_no_secret, streamed
from tests.support.faults import Fault, ThreadedFaultySandbox
from tests.support.servers import cli_server, sandbox_env

from .conftest import TRANSPORTS, Upstreams, connect, error_info, matrix_settings, result_text, settings_env

BALANCE = "dessert.get_balance"
USAGE = "dessert.get_usage"


def _usage_body(**first: Any) -> str:
    usage = SandboxAccount().usage()
    usage["recent_transactions"][0].update(first)
    return json.dumps(usage)


def _zero_width_every_4(text: str) -> str:
    return "\u200b".join(text[i : i + 4] for i in range(0, len(text), 4))


# 1. The key, echoed obfuscated in a description, is redacted from what is returned -----------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("disguise", ["zero-width every 4 characters", "all JSON \\u escapes"])
async def test_a_key_echoed_in_disguise_never_comes_back(
    transport: str, disguise: str, upstreams: Upstreams, tmp_path: Path
) -> None:
    key = upstreams.key
    sandbox = upstreams.sandbox
    sandbox.reset()
    if disguise.startswith("zero"):
        body = _usage_body(description="k=" + _zero_width_every_4(key))
    else:
        escaped = "".join(f"\\u{ord(c):04x}" for c in key)
        body = _usage_body(description="__KEY__").replace("__KEY__", "k=" + escaped)
    settings = matrix_settings(sandbox.url, key)
    async with connect(transport, settings, upstreams, tmp_path / "err") as client:
        sandbox.add_fault(Fault(body=body))
        result = await client.call_tool(USAGE, {})
    assert not result.is_error, result_text(result)
    assert result.structured_content is not None
    assert result.structured_content["recent_transactions"][0]["description"] == "k=[REDACTED]"
    assert_no_secret(json.dumps(result.structured_content), key)
    assert_no_secret(result_text(result), key)


async def test_a_key_echoed_in_disguise_in_an_error_body_is_redacted_too() -> None:
    key = "dsk_live_disguised_0123456789abcdef"
    body = json.dumps({"message": "bad key k=" + _zero_width_every_4(key)}).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, stream=httpx2.ByteStream(body), headers={"content-type": "application/json"})

    client = DessertClient("https://api.dessert.test", api_key=Secret(key), transport=httpx2.MockTransport(answer))
    with pytest.raises(DessertAPIError) as caught:
        await client.get_balance()
    assert caught.value.code == "auth_invalid"
    assert_no_secret(caught.value.message, key)


# 2. Closing stdin after writing the calls loses no answers -----------------------------------------------------


def _call(i: int, note: str = "") -> bytes:
    params = {"name": BALANCE, "arguments": {}} | ({"_meta": {"note": note}} if note else {})
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}).encode()


def _script(calls: bytes, upstreams: Upstreams) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[bytes]]:
    """A handshake, then `calls`, written to stdio `dessert-mcp` and stdin closed: its answers with ids, and the run."""
    handshake = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "script", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    command, args = server_command()
    result = subprocess.run(
        [command, *args],
        input=b"".join(json.dumps(line).encode() + b"\n" for line in handshake) + calls,
        env=settings_env(matrix_settings(upstreams.sandbox.url, upstreams.key)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    return [a for a in answers if a.get("id")], result


@pytest.mark.parametrize("calls", [1, 10, 200])
def test_calls_written_before_stdin_closes_are_all_answered(calls: int, upstreams: Upstreams) -> None:
    upstreams.sandbox.reset()
    answers, result = _script(b"".join(_call(i) + b"\n" for i in range(1, calls + 1)), upstreams)
    answered = {a["id"] for a in answers if "result" in a}
    assert answered == set(range(1, calls + 1)), result.stderr[-2000:]
    assert all(not a["result"].get("isError") for a in answers)
    assert result.returncode == 0


# The SDK reads stdin as UTF-8 text, bad bytes replaced, with a line ending at \r, \n or \r\n: the relay must wait
# for what it reads that way, not for what the bytes split at \n would say.
@pytest.mark.parametrize(
    "calls",
    [
        pytest.param(_call(1, "cafX").replace(b"cafX", b"caf\xe9") + b"\n", id="latin-1-byte"),
        pytest.param(_call(1) + b"\r" + _call(2) + b"\n", id="two-calls-on-one-line-split-by-a-bare-cr"),
        pytest.param(_call(1) + b"\r\n" + _call(2) + b"\r\n", id="crlf"),
    ],
)
def test_calls_the_sdk_reads_as_text_are_all_answered_after_stdin_closes(calls: bytes, upstreams: Upstreams) -> None:
    upstreams.sandbox.reset()
    upstreams.sandbox.add_fault(path="/v1/balance", delay_s=0.2, times=2)  # still in flight when stdin closes
    answers, result = _script(calls, upstreams)
    expected = {1, 2} if calls.count(b"tools/call") == 2 else {1}
    assert {a["id"] for a in answers if "result" in a} == expected, result.stderr[-2000:]
    assert result.returncode == 0


# 3. Abandoned handshakes never lock a new client out (what they cost in memory: `make bench`) -------------------------


class _KeptAliveConnection:
    """One HTTP/1.1 connection kept alive, driven by h11 (uvicorn's own parser): a request and its whole answer,
    one after another, as an httpx client on one connection sends them, for a tenth of the client's CPU time."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        url = urlsplit(base)
        self._sock = socket.create_connection((url.hostname, url.port), timeout=30)
        self._h11 = h11.Connection(h11.CLIENT)
        self._headers = [("Host", url.netloc), *headers.items()]

    def post(self, target: str, body: bytes) -> int:
        """POST `body`, read the answer to its end; its status code."""
        request = h11.Request(
            method="POST", target=target, headers=[*self._headers, ("Content-Length", str(len(body)))]
        )
        self._sock.sendall(
            self._h11.send(request) + self._h11.send(h11.Data(data=body)) + self._h11.send(h11.EndOfMessage())
        )
        status = 0
        while not isinstance(event := self._h11.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                self._h11.receive_data(self._sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            else:
                assert isinstance(event, h11.Data), event
        self._h11.start_next_cycle()
        return status

    def close(self) -> None:
        self._sock.close()


def test_after_three_thousand_abandoned_sessions_a_new_client_still_gets_in(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    with ThreadedFaultySandbox() as sandbox:
        env = sandbox_env(sandbox)
        with cli_server(["--transport", "http"], env, tmp_path / "server.log") as base:
            initialize = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": LATEST_HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "abandoner", "version": "0"},
                },
            }
            headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
            body = json.dumps(initialize).encode()
            http = _KeptAliveConnection(base, headers)
            try:
                for _ in range(3000):  # bounded: never closed, never used again
                    assert http.post("/mcp", body) == 200
                fresh = http.post("/mcp", body)
            finally:
                http.close()
            assert fresh == 200


# 4. /readyz says why in a code, never in upstream detail ------------------------------------------------------


def test_readyz_names_a_reason_code_only(serve: Any) -> None:
    base = serve(key="dsk_wrong_key_for_readiness_000000")
    response = httpx2.get(base + "/readyz", headers={"Host": "evil.example"})
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reason": "auth_invalid"}


def test_readyz_does_not_describe_an_unreachable_upstream(upstreams: Upstreams, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")} | {
        "DESSERT_API_KEY": upstreams.key,
        "DESSERT_API_BASE_URL": upstreams.refused,
        "DESSERT_MAX_ATTEMPTS": "1",
    }
    with cli_server(["--transport", "http"], env, tmp_path / "server.log") as base:
        response = httpx2.get(base + "/readyz", headers={"Host": "rebinding.example"})
    assert response.json() == {"status": "not ready", "reason": "upstream_unavailable"}
    assert "127.0.0.1" not in response.text


# 5. Numbers that break the schema or mislead ------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        pytest.param({"type": "Purchase", "usd_amount": 1e308}, id="usd 1e308"),
        pytest.param({"credits_delta": int("9" * 4000)}, id="4000-digit credits"),
        pytest.param({"balance_after": 2**53}, id="2^53 balance"),
    ],
)
async def test_numbers_out_of_range_are_a_bad_upstream_response_never_null(
    first: dict[str, Any], upstreams: Upstreams, tmp_path: Path
) -> None:
    sandbox = upstreams.sandbox
    sandbox.reset()
    usage = SandboxAccount().usage()
    usage["recent_transactions"][0].update(first)
    usage["recent_transactions"][1].update({k: v for k, v in first.items() if k != "credits_delta"})
    settings = matrix_settings(sandbox.url, upstreams.key)
    async with connect("memory", settings, upstreams, tmp_path / "err") as client:
        sandbox.add_fault(Fault(body=json.dumps(usage)))
        result = await client.call_tool(USAGE, {})
    assert error_info(result)["code"] == "bad_upstream_response"
    assert "number out of range" in result_text(result)


@pytest.mark.parametrize(("header", "value"), [("Retry-After", "9" * 305), ("retry-after-ms", "1e305")])
def test_an_absurd_retry_after_is_reported_as_one_day_at_most(header: str, value: str) -> None:
    assert retry_after(httpx2.Headers({header: value})) == 86400.0


# 6. An unsorted feed is sorted newest first before limit applies ----------------------------------------------


async def test_limit_takes_the_newest_even_when_the_feed_arrives_unsorted(upstreams: Upstreams, tmp_path: Path) -> None:
    sandbox = upstreams.sandbox
    sandbox.reset()
    rows = [
        ("January", "2026-01-15T10:00:00Z"),
        ("March", "2026-03-15T10:00:00Z"),
        ("February", "2026-02-15T10:00:00Z"),
    ]
    feed = [
        {"type": "Deduction", "credits_delta": -5, "balance_after": 100, "usd_amount": None, "description": d, "at": at}
        for d, at in rows
    ]
    settings = matrix_settings(sandbox.url, upstreams.key)
    async with connect("memory", settings, upstreams, tmp_path / "err") as client:
        sandbox.add_fault(Fault(body=json.dumps({"recent_transactions": feed})))
        result = await client.call_tool(USAGE, {"limit": 2})
    assert result.structured_content is not None
    assert [t["description"] for t in result.structured_content["recent_transactions"]] == ["March", "February"]


# 7. Error texts that say what actually happened ---------------------------------------------------------------


async def _balance_through(response: httpx2.Response) -> Any:
    client = DessertClient(
        "https://api.dessert.test",
        api_key=Secret("k" * 24),
        transport=httpx2.MockTransport(lambda r: streamed(response)),
    )
    return await client.get_balance()


async def test_a_304_is_called_not_modified_not_a_redirect() -> None:
    with pytest.raises(DessertAPIError) as caught:
        await _balance_through(httpx2.Response(304))
    assert "HTTP 304 Not Modified" in caught.value.message
    assert "redirect" not in caught.value.message


async def test_a_utf8_byte_order_mark_is_accepted() -> None:
    body = b"\xef\xbb\xbf" + json.dumps(SandboxAccount().balance()).encode()
    balance = await _balance_through(httpx2.Response(200, content=body))
    assert balance.credits_balance == 205


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
async def test_an_unsupported_content_encoding_is_named(encoding: str) -> None:
    response = httpx2.Response(
        200, stream=httpx2.ByteStream(b"\x28\xb5\x2f\xfd"), headers={"Content-Encoding": encoding}
    )
    with pytest.raises(DessertAPIError) as caught:
        await _balance_through(response)
    assert caught.value.code == "bad_upstream_response"
    assert f"content encoding this server does not accept ({encoding})" in caught.value.message


async def test_gzip_is_still_read() -> None:
    body = gzip.compress(json.dumps(SandboxAccount().balance()).encode())
    response = httpx2.Response(200, stream=httpx2.ByteStream(body), headers={"Content-Encoding": "gzip"})
    assert (await _balance_through(response)).credits_balance == 205
