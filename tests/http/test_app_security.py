"""Raw HTTP against the guarded transports: Host, Origin, bearer token, body size and the spec's 4xx answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from tests.support.faults import ThreadedFaultySandbox

TOKEN = "tok_" + "7" * 28
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
PING = '{"jsonrpc":"2.0","id":1,"method":"ping"}'


def modern_call(name: str = "dessert.get_balance", **headers: str) -> dict[str, Any]:
    """A complete 2026-07-28 tools/call request: one POST, no handshake."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "raw-http-test", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    base = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }
    return {"content": json.dumps(body), "headers": base | headers}


def initialize(**headers: str) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    return {"content": json.dumps(body), "headers": {"Content-Type": "application/json", "Accept": ACCEPT} | headers}


def post(url: str, request: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(url, timeout=10, **request)


def result_of(response: httpx2.Response) -> dict[str, Any]:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:") and '"id"' in line)
    data: dict[str, Any] = json.loads(text)
    return data


def test_a_modern_tool_call_over_plain_http_reaches_the_api(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox
) -> None:
    url = serve() + "/mcp"
    response = post(url, modern_call())
    assert response.status_code == 200, response.text
    assert result_of(response)["result"]["structuredContent"]["credits_balance"] == 205
    assert sandbox.stats()["requests"] == {"/v1/balance": 1}


def test_a_foreign_origin_gets_403_and_no_api_call(serve: Callable[..., str], sandbox: ThreadedFaultySandbox) -> None:
    url = serve() + "/mcp"
    response = post(url, modern_call(Origin="https://evil.example"))
    assert response.status_code == 403
    assert sandbox.stats()["total"] == 0


def test_a_foreign_host_gets_421_and_no_api_call(serve: Callable[..., str], sandbox: ThreadedFaultySandbox) -> None:
    url = serve() + "/mcp"
    response = post(url, modern_call(Host="rebound.evil.example"))
    assert response.status_code == 421
    assert sandbox.stats()["total"] == 0


def test_loopback_host_and_origin_are_accepted(serve: Callable[..., str]) -> None:
    base = serve()
    port = base.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        response = post(base + "/mcp", initialize(Host=host, Origin=f"http://localhost:{port}"))
        assert response.status_code == 200, (host, response.text)


def test_an_allowed_host_and_origin_from_the_command_line_are_accepted(serve: Callable[..., str]) -> None:
    url = serve(allowed_hosts=("mcp.example.com",), allowed_origins=("https://app.example.com",)) + "/mcp"
    ok = post(url, initialize(Host="mcp.example.com", Origin="https://app.example.com"))
    assert ok.status_code == 200
    assert post(url, initialize(Host="mcp.example.com", Origin="https://other.example.com")).status_code == 403
    assert post(url, initialize(Host="other.example.com")).status_code == 421


def test_without_the_bearer_token_the_endpoint_answers_401_and_calls_no_api(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox
) -> None:
    url = serve(auth_token=_secret(TOKEN)) + "/mcp"
    missing = post(url, modern_call())
    wrong = post(url, modern_call(Authorization="Bearer " + "x" * len(TOKEN)))
    dessert_key = post(url, modern_call(Authorization=f"Bearer {sandbox.key}"))
    other_scheme = post(url, modern_call(Authorization=f"Basic {TOKEN}"))
    for response in (missing, wrong, dessert_key, other_scheme):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert sandbox.stats()["total"] == 0
    allowed = post(url, modern_call(Authorization=f"Bearer {TOKEN}"))
    assert allowed.status_code == 200
    assert post(url, modern_call(Authorization=f"bearer {TOKEN}")).status_code == 200  # the scheme is case-blind
    assert sandbox.stats()["total"] == 2


def test_the_dessert_key_is_never_taken_from_the_mcp_client(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox
) -> None:
    url = serve(key="dsk_wrong_key_from_the_server_environment") + "/mcp"
    response = post(url, modern_call(Authorization=f"Bearer {sandbox.key}"))
    body = result_of(response)
    assert body["result"]["isError"] is True
    assert "rejected the API key" in body["result"]["content"][0]["text"]


def test_health_checks_need_no_token_and_answer_any_host(serve: Callable[..., str]) -> None:
    base = serve(auth_token=_secret(TOKEN))
    assert httpx2.get(base + "/healthz", headers={"Host": "10.0.0.7:8000"}).json() == {"status": "ok"}
    assert httpx2.get(base + "/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_256_kib_gets_413_before_parsing(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox, chunked: bool
) -> None:
    url = serve() + "/mcp"
    big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * (256 * 1024) + b'"}}'
    content: Any = iter([big[i : i + 65536] for i in range(0, len(big), 65536)]) if chunked else big
    response = httpx2.post(url, content=content, headers={"Content-Type": "application/json", "Accept": ACCEPT})
    assert response.status_code == 413
    assert post(url, initialize()).status_code == 200  # still serving
    assert sandbox.stats()["total"] == 0


def test_sse_message_bodies_over_256_kib_get_413(serve: Callable[..., str]) -> None:
    url = serve(transport="sse") + "/messages/?session_id=" + "0" * 32
    body = b"{" + b" " * (256 * 1024 + 1) + b"}"
    response = httpx2.post(url, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [  # PING is a valid request; each case breaks one rule
        pytest.param("{not json", {}, 400, id="malformed-json"),
        pytest.param('{"jsonrpc":"2.0","id":1}', {}, 400, id="not-a-request"),
        pytest.param('[{"jsonrpc":"2.0","id":1,"method":"ping"}]', {}, 400, id="batch"),
        # The SDK's transport security refuses a non-JSON Content-Type with 400 (before its transport's own 415).
        pytest.param(PING, {"Content-Type": "text/plain"}, 400, id="content-type"),
        pytest.param(PING, {"Mcp-Session-Id": "f" * 32}, 404, id="unknown-session"),
        pytest.param(PING, {"MCP-Protocol-Version": "1999-01-01"}, 400, id="bad-version"),
    ],
)
def test_bad_requests_get_the_spec_4xx_and_the_server_keeps_serving(
    serve: Callable[..., str], content: str, headers: dict[str, str], status: int
) -> None:
    # Session ids only exist with --stateful; stateless (the default) has none to be unknown.
    url = serve(stateful="Mcp-Session-Id" in headers) + "/mcp"
    response = httpx2.post(
        url, content=content, headers={"Content-Type": "application/json", "Accept": ACCEPT} | headers
    )
    assert response.status_code == status, response.text
    assert post(url, initialize()).status_code == 200
    assert post(url, modern_call()).status_code == 200


def test_sse_refuses_foreign_origins_and_unknown_sessions(serve: Callable[..., str]) -> None:
    base = serve(transport="sse")
    assert httpx2.get(base + "/sse", headers={"Origin": "https://evil.example"}).status_code == 403
    unknown = httpx2.post(
        base + "/messages/?session_id=" + "a" * 32, content="{}", headers={"Content-Type": "application/json"}
    )
    assert unknown.status_code == 404


def _secret(value: str) -> Any:
    from dessert_mcp.config import Secret

    return Secret(value)


def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_its_connection_closed(
    serve: Callable[..., str],
) -> None:
    """Such a request can smuggle a second one past a proxy (RFC 9112 section 6.3). uvicorn's httptools parser, a
    dependency wherever it has wheels, answers 400 and closes the connection; h11, its fallback, would serve the
    next request on it (the README's Deployment note says so)."""
    port = int(serve().rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        both = b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + both + b"\r\n0\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 "), received
    assert b'{"status":"ok"}' not in received
