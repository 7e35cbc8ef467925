"""Sign in to a `dessert-mcp --auth oauth` server from the command line and call one tool.

    DESSERT_API_KEY=<the key to link> python examples/oauth_sign_in.py http://127.0.0.1:8001/mcp

The MCP SDK's own OAuth client does the protocol: discovery, registration, PKCE (S256), the code exchange and the
bearer on every request. What a person does in a browser (open the sign-in page, paste the key, press Continue,
then Allow) this script does with plain HTTP, reading the authorization code from the redirect instead of
listening for it. The key goes only into the server's sign-in form; the script prints the tool's result, never the
key or a token. Needs only dessert-mcp's own dependencies (`mcp`, `httpx2`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

# Registered as the redirect; nothing listens there, since the code is read from the redirect itself.
CALLBACK = "http://127.0.0.1:9/callback"
FORM_FIELD = re.compile(r'name="(request|csrf)" value="([^"]*)"')


class MemoryStorage:
    """Tokens and the registration for this run only (a real client keeps them, so later runs skip the sign-in)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class FormSignIn:
    """The person's part: the server's sign-in page, filled in over HTTP."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(timeout=30) as browser:  # keeps the sign-in page's CSRF cookie
            page = await browser.get(authorization_url, follow_redirects=True)
            page.raise_for_status()
            form = dict(FORM_FIELD.findall(page.text))
            signin = urljoin(str(page.url), "/signin")
            checked = await browser.post(signin, data={**form, "api_key": self._key})
            if 'id="allow"' not in checked.text:
                sys.exit("The server did not accept the key (see its sign-in page); nothing was linked.")
            done = await browser.post(signin + "/consent", data={**form, "decision": "allow"})
        query = parse_qs(urlsplit(done.headers["location"]).query)
        self._result = AuthorizationCodeResult(
            code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self._result is not None, "the sign-in did not finish"
        return self._result


async def main(mcp_url: str, key: str) -> None:
    person = FormSignIn(key)
    oauth = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="dessert-mcp example", redirect_uris=[AnyUrl(CALLBACK)], scope="dessert:read"
        ),
        storage=MemoryStorage(),
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
    )
    async with (
        httpx2.AsyncClient(auth=oauth, timeout=60) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as client,
    ):
        result = await client.call_tool("dessert.get_balance", {})
    print(json.dumps(result.structured_content, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.environ.get("DESSERT_API_KEY"):
        sys.exit(__doc__.splitlines()[2].strip())
    asyncio.run(main(sys.argv[1], os.environ["DESSERT_API_KEY"]))
