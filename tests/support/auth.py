"""dessert-mcp with `--auth dessert-key` or `--auth oauth`, built by the real `build_app` and served by uvicorn on
127.0.0.1, and the OAuth flow driven over plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dessert_mcp.auth import SCOPE, DessertOAuthProvider, OAuthConfig
from dessert_mcp.auth._crypto import key_hash, new_token
from dessert_mcp.config import DEFAULT_ACCOUNT_CONCURRENCY, Secret, Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.http.serve import forwarded_headers
from tests.support.faults import ThreadedFaultySandbox
from tests.support.inspector import CHROMIUM as INSPECTOR_CHROMIUM
from tests.support.inspector import CHROMIUM_ARGS
from tests.support.servers import ServedApp


class Clock:
    """A clock for the token database that moves only when a test says so (starts at the real time, so tokens
    also pass the SDK's own wall-clock expiry check)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Running:
    url: str

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"


@contextmanager
def serve_auth(
    mode: str,
    *,
    dessert_url: str,
    database_url: str | None = None,
    encryption_key: str | None = None,
    public_url: str | None = None,
    account_concurrency: int = DEFAULT_ACCOUNT_CONCURRENCY,
    clock: Callable[[], float] | None = None,
    trusted_proxies: tuple[str, ...] = (),
    metrics_token: str | None = None,
    **config: Any,
) -> Iterator[Running]:
    """Serve dessert-mcp with `--auth <mode>` on a free port; `public_url` overrides the advertised origin,
    `clock` drives the token database's time (see `Clock`), `trusted_proxies` names the proxies whose
    X-Forwarded-For is believed (none, as by default) and `config` sets OAuthConfig fields (throttles, CIMD test
    mode, the token cache)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = replace(
        Settings.from_env({}, log_level="WARNING", tool_names="dotted"),
        base_url=dessert_url,
        account_concurrency=account_concurrency,
    )
    oauth = None
    if mode == "oauth":
        assert encryption_key is not None
        oauth = OAuthConfig(
            public_url=public_url or url, encryption_key=Secret(encryption_key), database_url=database_url, **config
        )
    scraper = Secret(metrics_token) if metrics_token is not None else None
    options = HTTPOptions(auth=mode, oauth=oauth, metrics_token=scraper).check(settings)  # type: ignore[arg-type]
    app = build_app(settings, options, auth_clock=clock)
    # Listening already: the first request waits in the backlog for start-up to end. Proxies as the CLI serves them.
    served = ServedApp(app, sock, **forwarded_headers(trusted_proxies))
    try:
        yield Running(url=url)
    finally:
        served.join()


# -- the OAuth flow over plain HTTP (what a browser and a client do, without either) -------------------------

REDIRECT_URI = "http://127.0.0.1:9/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class FlowClient:
    """Drives /register, /authorize, the sign-in page and /token with httpx2; keeps every response it saw."""

    def __init__(self, http: Any, base: str) -> None:
        self.http = http
        self.base = base
        self.seen: list[str] = []

    def _keep(self, response: Any) -> Any:
        self.seen.append(f"{response.status_code} {dict(response.headers)!r} {response.text}")
        return response

    async def register(self, redirect_uris: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        body = {"client_name": "Test client", "redirect_uris": redirect_uris or [REDIRECT_URI], **extra}
        response = self._keep(await self.http.post(self.base + "/register", json=body))
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def authorize(self, client: dict[str, Any], challenge: str | None, **params: str) -> Any:
        query = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT_URI,
            "state": "st4te",
            "scope": "dessert:read",
            "resource": self.base + "/mcp",
            **params,
        }
        if challenge is not None:
            query.setdefault("code_challenge", challenge)
            query.setdefault("code_challenge_method", "S256")
        return self._keep(await self.http.get(self.base + "/authorize", params=query))

    async def sign_in_page(self, authorize_response: Any) -> tuple[str, str]:
        """Follow /authorize to the sign-in page; returns (request id, csrf) and leaves the CSRF cookie set."""
        assert authorize_response.status_code == 302, authorize_response.text
        location = authorize_response.headers["location"]
        assert location.startswith(self.base + "/signin?request="), location
        page = self._keep(await self.http.get(location))
        assert page.status_code == 200
        request_id = parse_qs(urlsplit(location).query)["request"][0]
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return request_id, csrf

    async def submit_key(self, request_id: str, csrf: str, key: str) -> Any:
        return self._keep(
            await self.http.post(self.base + "/signin", data={"request": request_id, "csrf": csrf, "api_key": key})
        )

    async def consent(self, request_id: str, csrf: str, decision: str = "allow") -> Any:
        return self._keep(
            await self.http.post(
                self.base + "/signin/consent", data={"request": request_id, "csrf": csrf, "decision": decision}
            )
        )

    async def code_for(self, client: dict[str, Any], key: str, challenge: str) -> str:
        request_id, csrf = await self.sign_in_page(await self.authorize(client, challenge))
        checked = await self.submit_key(request_id, csrf, key)
        assert checked.status_code == 200, checked.text
        assert 'id="allow"' in checked.text
        done = await self.consent(request_id, csrf)
        assert done.status_code == 303, done.text
        query = parse_qs(urlsplit(done.headers["location"]).query)
        assert query["state"] == ["st4te"]
        assert query["iss"] == [self.base]
        return query["code"][0]

    async def token(self, client: dict[str, Any], **form: str) -> Any:
        data = {"client_id": client["client_id"], **form}
        if client.get("client_secret"):
            data["client_secret"] = client["client_secret"]
        return self._keep(await self.http.post(self.base + "/token", data=data))

    async def exchange(self, client: dict[str, Any], code: str, verifier: str) -> Any:
        return await self.token(
            client,
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
            redirect_uri=REDIRECT_URI,
            resource=self.base + "/mcp",
        )

    async def tokens_for(self, client: dict[str, Any], key: str) -> dict[str, Any]:
        verifier, challenge = pkce()
        code = await self.code_for(client, key, challenge)
        response = await self.exchange(client, code, verifier)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def refresh(self, client: dict[str, Any], refresh_token: str) -> Any:
        return await self.token(client, grant_type="refresh_token", refresh_token=refresh_token)

    async def revoke(self, client: dict[str, Any], token: str) -> Any:
        data = {"client_id": client["client_id"], "token": token}
        if client.get("client_secret"):
            data["client_secret"] = client["client_secret"]
        return self._keep(await self.http.post(self.base + "/revoke", data=data))

    async def call_tool(self, mcp_url: str, access_token: str) -> Any:
        """initialize over streamable HTTP with the token; returns the HTTP response (200, 401, 503, ...)."""
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        return self._keep(
            await self.http.post(
                mcp_url,
                json=body,
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json, text/event-stream"},
            )
        )


@asynccontextmanager
async def oauth_flow_on(
    dessert_url: str, database: Path, encryption_key: str, **config: Any
) -> AsyncIterator[FlowClient]:
    """`--auth oauth` served on the SQLite file `database` (`config` as for `serve_auth`), and a FlowClient on it."""
    with serve_auth(
        "oauth",
        dessert_url=dessert_url,
        database_url=f"sqlite:///{database}",
        encryption_key=encryption_key,
        **config,
    ) as running:
        async with httpx2.AsyncClient(timeout=60) as http:
            yield FlowClient(http, running.url)


async def call_tool(mcp_url: str, bearer: str, tool: str = "dessert.get_balance", **arguments: Any) -> Any:
    """Call a tool through a real MCP client with a fixed bearer; returns the CallToolResult."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as client,
    ):
        return await client.call_tool(tool, arguments)


async def link_directly(
    provider: DessertOAuthProvider, key: str, *, client_id: str = "linked-directly", refresh: str | None = None
) -> str:
    """Link `key` as an account straight through the provider and the store (no browser, no Dessert call);
    returns an access token for it (and issues `refresh` as its refresh token, given one; both live an hour)."""
    code = await issue_code(provider, key, client_id=client_id)
    access = new_token("dmcp_at_")
    redeemed = await provider.store.redeem_code(
        code, access=access, access_ttl_s=3600, refresh=refresh or new_token("dmcp_rt_"), refresh_ttl_s=3600
    )
    assert redeemed
    return access


async def issue_code(provider: DessertOAuthProvider, key: str, *, client_id: str = "linked-directly") -> str:
    """Link `key` as an account straight through the provider (no browser, no Dessert call), as the sign-in page
    does once the user consents; returns the authorization code for `client_id`."""
    return await provider.link_and_issue_code(
        client_id=client_id,
        key=Secret(key),
        params={
            "scopes": [SCOPE],
            "resource": provider.config.resource,
            "code_challenge": pkce()[1],
            "redirect_uri": REDIRECT_URI,
            "redirect_uri_provided_explicitly": True,
        },
        key_hash_value=key_hash(key),
    )


# Debian's Chromium as the dashboard tests launch it; Playwright's `headless=True` adds the headless flag itself.
CHROMIUM = str(INSPECTOR_CHROMIUM)
CHROMIUM_FLAGS = [flag for flag in CHROMIUM_ARGS if flag != "--headless"]


def oauth_env(sandbox: ThreadedFaultySandbox, **extra: str) -> dict[str, str]:
    """`dessert-mcp --auth oauth`'s environment: the sandbox's origin and no DESSERT_API_KEY (it would be refused)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    return env | {"DESSERT_API_BASE_URL": sandbox.url, "DESSERT_MCP_TOOL_NAMES": "dotted", **extra}
