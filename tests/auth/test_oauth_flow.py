"""The whole flow, as claude.ai or Claude Code would run it: the SDK's OAuth client (discovery, DCR or a Client ID
Metadata Document, PKCE) and headless Chromium filling in our sign-in page, then the tool through that session."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from examples.oauth_sign_in import MemoryStorage  # the token store the shipped example client keeps
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from playwright.async_api import Route, async_playwright
from pydantic import AnyUrl
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import CHROMIUM, CHROMIUM_FLAGS, oauth_env, serve_auth
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import free_port
from tests.support.servers import ServedApp, cli_server

CALLBACK = "http://127.0.0.1:9/oauth/callback"  # never listened on: the browser's request to it is intercepted


class BrowserSignIn:
    """The person: opens the authorization URL in Chromium, pastes the key, reads the account, clicks Allow."""

    def __init__(self, key: str, tmp_path: Path) -> None:
        self.key = key
        self.profile = tmp_path / "chromium-profile"
        self.result: AuthorizationCodeResult | None = None
        self.pages: list[str] = []
        self.shown_balance: str | None = None
        self.headers: dict[str, str] = {}

    async def redirect_handler(self, authorization_url: str) -> None:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(self.profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
            )
            try:
                page = await context.new_page()
                landed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

                async def callback(route: Route) -> None:
                    if not landed.done():
                        landed.set_result(route.request.url)
                    await route.fulfill(status=200, content_type="text/html", body="<p>You can close this tab.</p>")

                await page.route(CALLBACK + "*", callback)
                response = await page.goto(authorization_url)
                assert response is not None
                self.headers = await response.all_headers()
                self.pages.append(await page.content())
                await page.fill("#api_key", self.key)
                await page.click("#check")
                await page.wait_for_selector("#allow")
                self.shown_balance = await page.inner_text("#balance")
                self.pages.append(await page.content())
                await page.click("#allow")
                url = await asyncio.wait_for(landed, timeout=30)
            finally:
                await context.close()
        query = parse_qs(urlsplit(url).query)
        self.result = AuthorizationCodeResult(
            code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


async def run_flow(mcp_url: str, person: BrowserSignIn, *, client_metadata_url: str | None = None) -> Any:
    storage = MemoryStorage()
    oauth = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="Flow test client", redirect_uris=[AnyUrl(CALLBACK)], scope="dessert:read"
        ),
        storage=storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
        client_metadata_url=client_metadata_url,
    )
    async with (
        httpx2.AsyncClient(auth=oauth, follow_redirects=True, timeout=60) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as client,
    ):
        tools = await client.list_tools()
        balance = await client.call_tool("dessert.get_balance", {})
        usage = await client.call_tool("dessert.get_usage", {"limit": 3})
    return tools, balance, usage, storage


@pytest.fixture(autouse=True)
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert_no_secret(caplog.text)


async def test_the_sdk_client_registers_signs_in_through_chromium_and_calls_both_tools_of_dessert_mcp(
    canary_api: ThreadedFaultySandbox, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    person = BrowserSignIn(CANARY_KEY, tmp_path)
    port = free_port()
    env = oauth_env(
        canary_api,
        DESSERT_MCP_ENCRYPTION_KEY=encryption_key,
        DESSERT_MCP_DATABASE_URL=database_url,
        DESSERT_MCP_LOG_LEVEL="DEBUG",
    )
    public = f"http://127.0.0.1:{port}"
    args = ["--transport", "http", "--auth", "oauth", "--public-url", public]
    with cli_server(args, env, tmp_path / "server.log", port=port) as url:
        tools, result, usage, storage = await run_flow(url + "/mcp", person)
    assert_no_secret((tmp_path / "server.log").read_text())
    assert sorted(t.name for t in tools.tools) == [
        "dessert.get_balance",
        "dessert.get_spend",
        "dessert.get_usage",
        "dessert.set_alerts",
    ]
    assert not result.is_error, result
    expected = canary_api.sandbox.account.balance()["credits_balance"]
    assert result.structured_content["credits_balance"] == expected
    assert not usage.is_error, usage
    assert len(usage.structured_content["recent_transactions"]) == 3
    assert usage.structured_content["recent_transactions"][0]["balance_after"] == expected
    assert person.shown_balance == str(expected)
    assert storage.client_info is not None
    assert storage.client_info.client_id  # registered dynamically (RFC 7591)
    assert person.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in person.headers["content-security-policy"]
    for page in person.pages:
        assert_no_secret(page)
    assert_no_secret(repr(result) + repr(usage) + repr(storage.tokens))


# -- Client ID Metadata Documents: the client's document on an https server of its own (loopback, test mode) --


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextmanager
def client_document_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """An https server on 127.0.0.1 serving one client metadata document; yields (its URL, CA file, fetch log)."""
    cert, key = _self_signed(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"https://127.0.0.1:{sock.getsockname()[1]}/oauth/client.json"
    fetched: list[str] = []

    async def document(request: Any) -> JSONResponse:
        fetched.append(str(request.url))
        return JSONResponse(
            {
                "client_id": url,
                "client_name": "CIMD test client",
                "redirect_uris": [CALLBACK],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
            headers={"Cache-Control": "max-age=600"},
        )

    app = Starlette(routes=[StarletteRoute("/oauth/client.json", document)])
    served = ServedApp(app, sock, ssl_certfile=str(cert), ssl_keyfile=str(key))  # the backlog holds early requests
    try:
        yield url, cert, fetched
    finally:
        served.join()


async def test_the_sdk_client_signs_in_with_a_client_id_metadata_document(
    canary_api: ThreadedFaultySandbox, tmp_path: Path, encryption_key: str
) -> None:
    person = BrowserSignIn(CANARY_KEY, tmp_path)
    with (
        client_document_server(tmp_path) as (document_url, ca_file, fetched),
        serve_auth(
            "oauth",
            dessert_url=canary_api.url,
            database_url=f"sqlite:///{tmp_path / 'auth.db'}",
            encryption_key=encryption_key,
            cimd_allow_loopback=True,
            cimd_ca_file=str(ca_file),
        ) as server,
    ):
        _, result, usage, storage = await run_flow(server.mcp_url, person, client_metadata_url=document_url)
        async with httpx2.AsyncClient() as http:
            registered = await http.get(server.url + "/.well-known/oauth-authorization-server")
    assert registered.json()["client_id_metadata_document_supported"] is True
    assert not result.is_error, result
    assert not usage.is_error, usage
    assert storage.client_info is not None
    assert storage.client_info.client_id == document_url  # no /register: the URL is the client_id
    assert len(fetched) == 1, "the document is fetched once and then served from the cache"
    assert json.loads(json.dumps(result.structured_content))["credits_balance"] == 205
