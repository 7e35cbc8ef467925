"""The standards points an attacker (or a strict client) checks: error redirects only to trusted return addresses
(RFC 9700 §4.11.2), RFC 6750 §3.1 challenges, RFC 6749 §5.2 Basic challenges, RFC 7636 challenge length, the
metadata we advertise, the schemes a client may register and the consent page's loopback warning."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.support.auth import REDIRECT_URI, FlowClient, pkce, serve_auth
from tests.support.faults import ThreadedFaultySandbox

PHISH = "https://phish.example/login"


async def test_an_error_before_consent_is_not_redirected_to_an_untrusted_registered_address(
    oauth_flow: FlowClient,
) -> None:
    client = await oauth_flow.register([PHISH])
    for params in ({"scope": "admin"}, {"code_challenge": "short"}, {"resource": "https://other.example/mcp"}):
        response = await oauth_flow.authorize(client, pkce()[1], redirect_uri=PHISH, **params)
        assert response.status_code == 400, params
        assert "location" not in response.headers
        assert 'id="authorize-error"' in response.text
        assert response.headers["x-frame-options"] == "DENY"
    missing_pkce = await oauth_flow.authorize(client, None, redirect_uri=PHISH)
    assert missing_pkce.status_code == 400
    assert "location" not in missing_pkce.headers
    # A good request still goes on to the sign-in page.
    assert (
        (await oauth_flow.authorize(client, pkce()[1], redirect_uri=PHISH))
        .headers["location"]
        .startswith(oauth_flow.base + "/signin?")
    )


async def test_an_error_before_consent_still_goes_back_to_a_loopback_client(oauth_flow: FlowClient) -> None:
    response = await oauth_flow.authorize(await oauth_flow.register(), pkce()[1], scope="admin")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI)
    assert parse_qs(urlsplit(location).query)["error"] == ["invalid_scope"]


async def test_a_pkce_challenge_must_be_a_sha256_in_base64url(oauth_flow: FlowClient) -> None:
    client = await oauth_flow.register()
    for challenge in ("a", "a" * 42, "a" * 44, "+" * 43, "a" * 128):
        response = await oauth_flow.authorize(client, challenge)
        assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["invalid_request"], challenge


async def test_the_metadata_says_public_clients_may_revoke_without_a_secret(oauth_flow: FlowClient) -> None:
    meta = (await oauth_flow.http.get(oauth_flow.base + "/.well-known/oauth-authorization-server")).json()
    assert "none" in meta["revocation_endpoint_auth_methods_supported"]


async def test_a_request_without_credentials_gets_a_challenge_with_the_scope_and_no_error_code(
    oauth_flow: FlowClient,
) -> None:
    response = await oauth_flow.http.post(oauth_flow.base + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert "error=" not in challenge
    assert 'scope="dessert:read"' in challenge
    assert f'resource_metadata="{oauth_flow.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    wrong = await oauth_flow.call_tool(oauth_flow.base + "/mcp", "dmcp_at_not-a-token")
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]


async def test_dessert_key_mode_challenges_a_request_without_credentials_the_same_way(
    canary_api: ThreadedFaultySandbox,
) -> None:
    with serve_auth("dessert-key", dessert_url=canary_api.url) as running:
        async with httpx2.AsyncClient() as http:
            response = await http.post(running.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer scope="dessert:read"'


async def test_a_basic_auth_client_that_fails_gets_a_basic_challenge(oauth_flow: FlowClient) -> None:
    client = await oauth_flow.register(token_endpoint_auth_method="client_secret_basic")
    wrong = base64.b64encode(f"{client['client_id']}:wrong-secret".encode()).decode()
    for path in ("/token", "/revoke"):
        response = await oauth_flow.http.post(
            oauth_flow.base + path,
            data={"client_id": client["client_id"], "grant_type": "refresh_token", "refresh_token": "x", "token": "x"},
            headers={"Authorization": f"Basic {wrong}"},
        )
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic "), path


@pytest.mark.parametrize(
    "uri", ["ftp://files.example/cb", "gopher://g.example/cb", "ssh://host.example/cb", "telnet://h.example/"]
)
async def test_network_schemes_are_refused_as_redirect_uris(oauth_flow: FlowClient, uri: str) -> None:
    response = await oauth_flow.http.post(oauth_flow.base + "/register", json={"redirect_uris": [uri]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


async def test_app_schemes_stay_allowed_as_redirect_uris(oauth_flow: FlowClient) -> None:
    for uri in ("cursor://anysphere.cursor-mcp/oauth/callback", "com.example.app:/oauth2redirect"):
        assert (
            await oauth_flow.http.post(oauth_flow.base + "/register", json={"redirect_uris": [uri]})
        ).status_code == 201


async def test_the_consent_page_warns_when_the_app_returns_to_loopback(oauth_flow: FlowClient) -> None:
    local = await oauth_flow.authorize(await oauth_flow.register(), pkce()[1])
    page = await oauth_flow.http.get(local.headers["location"])
    assert 'id="loopback-warning"' in page.text
    remote = await oauth_flow.authorize(
        await oauth_flow.register(["https://app.example/cb"]), pkce()[1], redirect_uri="https://app.example/cb"
    )
    page = await oauth_flow.http.get(remote.headers["location"])
    assert page.status_code == 200
    assert 'id="loopback-warning"' not in page.text
