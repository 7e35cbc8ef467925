"""Who is calling: the token the SDK's bearer middleware accepted, and the Dessert key it stands for.

In both modes the verifier returns a `CallerToken`, an `AccessToken` that also carries the caller's
Dessert key (never serialized: a pydantic private attribute). The SDK keeps it in its per-request
context (`get_access_token()`), so a tool reads the key with `caller_key()` and nothing is stored.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from pydantic import PrivateAttr

from dessert_mcp.auth.config import SCOPE
from dessert_mcp.config import Secret, Settings

DESSERT_KEY_CLIENT: Final = "dessert-key"


class CallerToken(AccessToken):
    """An accepted bearer token plus the Dessert key to use for this request (not a field: never dumped)."""

    _key: Secret = PrivateAttr()

    @classmethod
    def carrying(cls, key: Secret, **fields: object) -> CallerToken:
        token = cls.model_validate(fields)
        token._key = key
        return token

    @property
    def key(self) -> Secret:
        return self._key

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # The dessert-key token's `token` is a fingerprint already; say so rather than show anything else.
        return [("client_id", self.client_id), ("subject", self.subject)]


def caller_key() -> Secret | None:
    """The current HTTP request's Dessert key, in either auth mode; None outside an authenticated request.

    Tools call this per request and build their Dessert client with it (never the operator's key).
    """
    token = get_access_token()
    return token.key if isinstance(token, CallerToken) else None


def caller_identity() -> str | None:
    """A stable, non-secret id of the calling account, to key per-account state (single-flight, limits, caches).

    `acct:<uuid>` for a linked account (oauth), `key:<sha256>` for a bearer Dessert key.
    """
    token = get_access_token()
    return token.subject if isinstance(token, CallerToken) else None


class DessertKeyVerifier:
    """`--auth dessert-key`: `Authorization: Bearer <Dessert API key>` on every request; nothing stored.

    The key is not checked against Dessert here (that would cost an upstream call per HTTP request);
    a wrong key surfaces as the tool's `auth_invalid` error. Malformed keys are refused with 401.
    """

    def __init__(self, resource: str | None = None) -> None:
        self._resource = resource
        self._settings = Settings()  # only its key check is used, once per request

    async def verify_token(self, token: str) -> AccessToken | None:
        key = self._settings.with_key(token.strip()).api_key
        if key is None:
            return None
        digest = hashlib.sha256(key.get().encode()).hexdigest()
        return CallerToken.carrying(
            key,
            token=key.fingerprint(),
            client_id=DESSERT_KEY_CLIENT,
            scopes=[SCOPE],
            subject=f"key:{digest}",
            resource=self._resource,
        )


def dessert_key_server_kwargs(public_url: str = "http://127.0.0.1") -> dict[str, Any]:
    """`MCPServer(**dessert_key_server_kwargs())` for `--auth dessert-key`: a verifier and nothing stored.

    No authorization server is advertised (there is none); a request without a key gets 401.
    """
    return {
        "auth": AuthSettings(issuer_url=public_url, resource_server_url=None, required_scopes=[SCOPE]),
        "token_verifier": DessertKeyVerifier(),
    }
