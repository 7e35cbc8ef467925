"""`--auth oauth`, attacked: each case from the issue against a real server, a real sandbox and a real database."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from dessert_mcp.auth import OAuthConfig, OAuthWiring, Store
from dessert_mcp.auth.cimd import ClientMetadataError, check_url, parse_document
from dessert_mcp.auth.signin import redirect_uri_with
from dessert_mcp.config import Secret
from tests.auth.conftest import OTHER_KEY
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import REDIRECT_URI, FlowClient, Running, call_tool, pkce, serve_auth
from tests.support.faults import ThreadedFaultySandbox

NASTY = "'; DROP TABLE grants; --\"<script>alert(1)</script>%00\\"


@pytest.fixture(scope="module")
def db_dir(oauth_db: Path) -> Path:
    return oauth_db.parent


@pytest.fixture(scope="module")
def server(oauth_server: Running) -> Running:
    return oauth_server


@pytest.fixture
def flow(oauth_flow: FlowClient) -> FlowClient:
    return oauth_flow


@pytest.fixture(autouse=True)
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert_no_secret(caplog.text)


async def test_metadata_advertises_pkce_s256_cimd_and_points_401s_at_the_resource_document(flow: FlowClient) -> None:
    meta = (await flow.http.get(flow.base + "/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == flow.base
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["client_id_metadata_document_supported"] is True
    assert meta["registration_endpoint"] == flow.base + "/register"
    assert meta["revocation_endpoint"] == flow.base + "/revoke"
    prm = (await flow.http.get(flow.base + "/.well-known/oauth-protected-resource/mcp")).json()
    assert prm["resource"] == flow.base + "/mcp"
    assert prm["authorization_servers"] == [flow.base]
    unauthenticated = await flow.http.post(flow.base + "/mcp", json={})
    assert unauthenticated.status_code == 401
    assert (
        f'resource_metadata="{flow.base}/.well-known/oauth-protected-resource/mcp"'
        in (unauthenticated.headers["www-authenticate"])
    )


async def test_a_linked_account_calls_the_tool_with_its_own_key(flow: FlowClient, server: Running) -> None:
    client = await flow.register()
    tokens = await flow.tokens_for(client, CANARY_KEY)
    assert tokens["scope"] == "dessert:read"
    assert tokens["expires_in"] == 900
    result = await call_tool(server.mcp_url, tokens["access_token"])
    assert not result.is_error, result
    assert result.structured_content["credits_balance"] == 205
    assert_no_secret("\n".join(flow.seen) + repr(result))


async def test_the_sign_in_page_cannot_be_framed_or_cached(flow: FlowClient) -> None:
    _, challenge = pkce()
    response = await flow.authorize(await flow.register(), challenge)
    page = await flow.http.get(response.headers["location"])
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


async def test_a_wrong_key_is_refused_without_echoing_it(flow: FlowClient) -> None:
    _, challenge = pkce()
    request_id, csrf = await flow.sign_in_page(await flow.authorize(await flow.register(), challenge))
    response = await flow.submit_key(request_id, csrf, OTHER_KEY)
    assert response.status_code == 400
    assert "did not accept that key" in response.text
    assert_no_secret(response.text, OTHER_KEY)
    consent = await flow.consent(request_id, csrf)  # no checked key behind this sign-in: nothing to consent to
    assert consent.status_code == 400


async def test_the_consent_form_refuses_a_missing_or_foreign_csrf_token(flow: FlowClient) -> None:
    _, challenge = pkce()
    client = await flow.register()
    request_a, csrf_a = await flow.sign_in_page(await flow.authorize(client, challenge))
    request_b, csrf_b = await flow.sign_in_page(await flow.authorize(client, challenge))
    assert (await flow.submit_key(request_a, "", CANARY_KEY)).status_code == 403
    assert (await flow.submit_key(request_a, csrf_b, CANARY_KEY)).status_code == 403
    assert (await flow.submit_key(request_a, csrf_a, CANARY_KEY)).status_code == 200
    # A cross-site form post: right token, but the SameSite cookie does not come along.
    flow.http.cookies.clear()
    assert (await flow.consent(request_a, csrf_a)).status_code == 403
    assert request_b


async def test_pkce_is_required_s256_only_and_the_verifier_must_match(flow: FlowClient) -> None:
    client = await flow.register()
    missing = await flow.authorize(client, None)
    assert missing.status_code == 302
    assert "error=invalid_request" in missing.headers["location"]
    verifier, challenge = pkce()
    plain = await flow.authorize(client, verifier, code_challenge_method="plain")
    assert plain.status_code == 302
    assert "error=invalid_request" in plain.headers["location"]
    code = await flow.code_for(client, CANARY_KEY, challenge)
    wrong = await flow.exchange(client, code, pkce()[0])
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    no_verifier = await flow.token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI)
    assert no_verifier.status_code == 400
    assert no_verifier.json()["error"] == "invalid_request"
    assert (await flow.exchange(client, code, verifier)).status_code == 200


async def test_a_replayed_code_is_refused_and_revokes_what_it_yielded(flow: FlowClient, server: Running) -> None:
    client = await flow.register()
    verifier, challenge = pkce()
    code = await flow.code_for(client, CANARY_KEY, challenge)
    first = await flow.exchange(client, code, verifier)
    assert first.status_code == 200
    again = await flow.exchange(client, code, verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert (await flow.call_tool(server.mcp_url, first.json()["access_token"])).status_code == 401


async def test_redirect_uris_match_exactly_and_never_redirect_elsewhere(flow: FlowClient) -> None:
    client = await flow.register()
    _, challenge = pkce()
    for attempt in (
        "https://evil.example/callback",
        REDIRECT_URI + "/extra",
        REDIRECT_URI + "?next=https://evil.example",
        "http://127.0.0.1:9/callback#frag",
        "http://127.0.0.1:10/callback",
    ):
        response = await flow.authorize(client, challenge, redirect_uri=attempt)
        assert response.status_code == 400, attempt
        assert "location" not in response.headers
    for bad in (["javascript:alert(1)"], ["http://evil.example/cb"], ["https://x.example/cb#f"], ["data:text/html,x"]):
        refused = await flow.http.post(flow.base + "/register", json={"redirect_uris": bad})
        assert refused.status_code == 400, bad


async def test_a_token_for_another_resource_is_refused(flow: FlowClient, server: Running) -> None:
    client = await flow.register()
    _, challenge = pkce()
    response = await flow.authorize(client, challenge, resource="https://other.example/mcp")
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["invalid_target"]


async def test_a_token_from_a_deployment_with_another_url_is_refused_on_this_one(
    canary_api: ThreadedFaultySandbox, db_dir: Path, encryption_key: str, flow: FlowClient
) -> None:
    # Same database, same encryption key, different public URL: the token's audience is the other server.
    with serve_auth(
        "oauth",
        dessert_url=canary_api.url,
        database_url=f"sqlite:///{db_dir / 'auth.db'}",
        encryption_key=encryption_key,
    ) as other:
        async with httpx2.AsyncClient(timeout=30) as http:
            other_flow = FlowClient(http, other.url)
            tokens = await other_flow.tokens_for(await other_flow.register(), CANARY_KEY)
            assert (await other_flow.call_tool(other.mcp_url, tokens["access_token"])).status_code == 200
    assert (await flow.call_tool(flow.base + "/mcp", tokens["access_token"])).status_code == 401


async def test_an_access_token_expires(canary_api: ThreadedFaultySandbox, tmp_path: Path, encryption_key: str) -> None:
    class Clock:
        now = time.time()

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(encryption_key),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    wiring = OAuthWiring(config, store=Store(config.database_url or "", clock=clock))
    try:
        await wiring.store.migrate()
        token = await _issue_directly(wiring)
        assert await wiring.provider.load_access_token(token) is not None
        clock.now += config.access_token_ttl_s + 1
        assert await wiring.provider.load_access_token(token) is None
    finally:
        await wiring.aclose()


async def _issue_directly(wiring: OAuthWiring) -> str:
    from dessert_mcp.auth._crypto import key_hash

    params = {
        "scopes": ["dessert:read"],
        "resource": wiring.config.resource,
        "code_challenge": "c",
        "redirect_uri": REDIRECT_URI,
        "redirect_uri_provided_explicitly": True,
    }
    code = await wiring.provider.link_and_issue_code(
        client_id="c1", key=Secret(CANARY_KEY), params=params, key_hash_value=key_hash(CANARY_KEY)
    )
    assert await wiring.store.redeem_code(code, access="at", access_ttl_s=900, refresh="rt", refresh_ttl_s=9000)
    return "at"


async def test_a_revoked_token_stops_working_with_its_whole_family(flow: FlowClient, server: Running) -> None:
    client = await flow.register()
    tokens = await flow.tokens_for(client, CANARY_KEY)
    assert (await flow.call_tool(server.mcp_url, tokens["access_token"])).status_code == 200
    assert (await flow.revoke(client, tokens["access_token"])).status_code == 200
    assert (await flow.call_tool(server.mcp_url, tokens["access_token"])).status_code == 401
    assert (await flow.refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_a_replayed_refresh_token_revokes_its_family(flow: FlowClient, server: Running) -> None:
    client = await flow.register()
    first = await flow.tokens_for(client, CANARY_KEY)
    rotated = await flow.refresh(client, first["refresh_token"])
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await flow.call_tool(server.mcp_url, second["access_token"])).status_code == 200
    replay = await flow.refresh(client, first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert (await flow.call_tool(server.mcp_url, second["access_token"])).status_code == 401
    assert (await flow.refresh(client, second["refresh_token"])).json()["error"] == "invalid_grant"


async def test_a_refresh_token_works_only_for_the_client_it_was_issued_to(flow: FlowClient) -> None:
    tokens = await flow.tokens_for(await flow.register(), CANARY_KEY)
    thief = await flow.register()
    assert (await flow.refresh(thief, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_sql_metacharacters_in_every_field_are_only_data(flow: FlowClient, server: Running) -> None:
    client = await flow.register(client_name=NASTY, client_uri="https://x.example/" + "%27%3B")
    _, challenge = pkce()
    response = await flow.authorize(client, challenge, state=NASTY)
    request_id, csrf = await flow.sign_in_page(response)
    page = await flow.submit_key(request_id, csrf, "dsk_" + NASTY.replace(" ", ""))
    assert page.status_code == 400
    assert "<script>alert(1)</script>" not in page.text  # escaped, not rendered
    for bad in (
        await flow.authorize({"client_id": NASTY}, challenge),
        await flow.authorize(client, challenge, scope=NASTY),
        await flow.http.get(flow.base + "/signin", params={"request": NASTY}),
        await flow.token(client, grant_type="authorization_code", code=NASTY, code_verifier=NASTY),
        await flow.token(client, grant_type="refresh_token", refresh_token=NASTY),
        await flow.revoke(client, NASTY),
        await flow.call_tool(server.mcp_url, NASTY),
    ):
        assert bad.status_code < 500, bad.text
    assert (
        await flow.call_tool(server.mcp_url, (await flow.tokens_for(client, CANARY_KEY))["access_token"])
    ).status_code == 200


async def test_key_guessing_on_the_sign_in_form_is_throttled(
    canary_api: ThreadedFaultySandbox, tmp_path: Path, encryption_key: str
) -> None:
    with serve_auth(
        "oauth",
        dessert_url=canary_api.url,
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
        encryption_key=encryption_key,
        sign_in_attempts=6,
    ) as running:
        async with httpx2.AsyncClient(timeout=30) as http:
            flow = FlowClient(http, running.url)
            _, challenge = pkce()
            request_id, csrf = await flow.sign_in_page(await flow.authorize(await flow.register(), challenge))
            statuses = [
                (await flow.submit_key(request_id, csrf, f"dsk_wrong_{i:04d}_padding")).status_code for i in range(8)
            ]
            assert statuses == [400] * 6 + [429, 429]
            # Even the right key is not checked while throttled.
            assert (await flow.submit_key(request_id, csrf, CANARY_KEY)).status_code == 429


async def test_code_guessing_on_the_token_endpoint_is_throttled(
    canary_api: ThreadedFaultySandbox, tmp_path: Path, encryption_key: str
) -> None:
    with serve_auth(
        "oauth",
        dessert_url=canary_api.url,
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
        encryption_key=encryption_key,
        token_failures=5,
    ) as running:
        async with httpx2.AsyncClient(timeout=30) as http:
            flow = FlowClient(http, running.url)
            client = await flow.register()
            statuses = []
            for i in range(7):
                response = await flow.token(
                    client, grant_type="authorization_code", code=f"guess-{i}", code_verifier="v" * 43
                )
                statuses.append(response.status_code)
            assert statuses == [400] * 5 + [429, 429]


async def test_client_metadata_urls_must_be_https_and_public() -> None:
    for url in (
        "http://client.example/meta.json",
        "https://client.example/",
        "https://user:pw@client.example/meta.json",
        "https://10.0.0.8/meta.json",
        "https://192.168.1.1/meta.json",
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1/meta.json",
        "https://localhost/meta.json",
        "https://[::1]/meta.json",
        "https://[::ffff:10.0.0.1]/meta.json",
        "https://[fd00::1]/meta.json",
        "https://0.0.0.0/meta.json",
    ):
        with pytest.raises(ClientMetadataError):
            await check_url(url, allow_loopback=False)
    await check_url("https://127.0.0.1/meta.json", allow_loopback=True)
    with pytest.raises(ClientMetadataError):
        await check_url("https://10.0.0.8/meta.json", allow_loopback=True)


async def test_authorize_with_a_private_address_client_id_fetches_nothing_and_fails(flow: FlowClient) -> None:
    _, challenge = pkce()
    response = await flow.authorize({"client_id": "https://10.1.2.3/client.json"}, challenge)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_a_client_metadata_document_must_name_itself_and_hold_no_secret() -> None:
    url = "https://client.example/meta.json"
    good: dict[str, Any] = {"client_id": url, "redirect_uris": [REDIRECT_URI], "client_name": "C"}
    import json

    assert parse_document(url, json.dumps(good).encode()).token_endpoint_auth_method == "none"
    for bad in (
        {**good, "client_id": "https://other.example/meta.json"},
        {**good, "client_secret": "s"},
        {**good, "token_endpoint_auth_method": "client_secret_post"},
        {**good, "redirect_uris": ["javascript:alert(1)"]},
        {**good, "redirect_uris": []},
    ):
        with pytest.raises(ClientMetadataError):
            parse_document(url, json.dumps(bad).encode())
    with pytest.raises(ClientMetadataError):
        parse_document(url, b"not json")


def _database_files(db_dir: Path) -> tuple[int, bytes]:
    """The linked accounts in the SQLite database, and the bytes of its files (the journal and WAL too)."""
    with closing(sqlite3.connect(f"file:{db_dir / 'auth.db'}?mode=ro", uri=True)) as db:
        (linked,) = db.execute("SELECT count(*) FROM accounts WHERE revoked_at IS NULL").fetchone()
    return linked, b"".join(p.read_bytes() for p in db_dir.iterdir() if p.name.startswith("auth.db"))


async def test_the_database_file_never_holds_the_key(flow: FlowClient, server: Running, db_dir: Path) -> None:
    tokens = await flow.tokens_for(await flow.register(), CANARY_KEY)
    assert not (await call_tool(server.mcp_url, tokens["access_token"])).is_error
    linked, raw = _database_files(db_dir)
    assert linked, "no linked account in the database"
    assert b"dsk_live_CANARY" not in raw
    assert_no_secret(raw.decode("latin-1"))


def test_a_redirect_keeps_the_clients_own_query_and_encodes_ours() -> None:
    target = redirect_uri_with("https://app.example/cb?x=1&y=", code="a b&c", state=None, iss="https://mcp.example")
    assert target == "https://app.example/cb?x=1&y=&code=a+b%26c&iss=https%3A%2F%2Fmcp.example"
