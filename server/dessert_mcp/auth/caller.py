"""Who is calling: the token the SDK's bearer middleware accepted, and the Dessert key it stands for.

In both modes the verifier returns a `CallerToken`, an `AccessToken` that also carries the caller's
Dessert key (never serialized: a pydantic private attribute). The SDK keeps it in its per-request
context (`get_access_token()`), so a tool reads the key with `caller_token()` and nothing is stored.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Final, Self, cast

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from pydantic import PrivateAttr

from dessert_mcp.auth.config import SCOPE
from dessert_mcp.config import Secret, fingerprint, read_key

DESSERT_KEY_CLIENT: Final = "dessert-key"
# Verified keys kept (with --auth dessert-key, the process holds each calling key in its Dessert client anyway).
KEY_TOKENS_KEPT: Final = 1024


class CallerToken(AccessToken):
    """An accepted bearer token plus the Dessert key to use for this request (not a field: never dumped)."""

    _key: Secret = PrivateAttr()

    @classmethod
    def carrying(cls, key: Secret, **fields: Any) -> Self:
        """Built on every MCP request from what the verifier already checked, so not validated again."""
        token = cls.model_construct(**fields)
        token._key = key
        return cast(Self, token)  # pydantic's mypy plugin types model_construct as the class it is defined on

    @property
    def key(self) -> Secret:
        return self._key

    @property
    def key_hint(self) -> str:
        """What the caller checks when Dessert rejects this key: in these modes it is theirs, not the server's."""
        if self.client_id == DESSERT_KEY_CLIENT:
            return "Check the Dessert API key this request sends as its bearer token."
        return "Reconnect to sign in again with a current Dessert API key."

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # The dessert-key token's `token` is a fingerprint already; say so rather than show anything else.
        return [("client_id", self.client_id), ("subject", self.subject)]


def caller_token() -> CallerToken | None:
    """The current HTTP request's accepted token, in either auth mode; None outside an authenticated request.

    Its `key` is the caller's Dessert key: tools build their Dessert client with it (never the operator's key). Its
    `subject` is a stable, non-secret id of the account, to key per-account state (single-flight, limits, caches):
    `acct:<uuid>` for a linked account (oauth), `key:<sha256>` for a bearer Dessert key.
    """
    token = get_access_token()
    return token if isinstance(token, CallerToken) else None


class DessertKeyVerifier:
    """`--auth dessert-key`: `Authorization: Bearer <Dessert API key>` on every request; nothing stored (the
    tokens of recent keys are kept in memory only, as their Dessert clients are).

    The key is not checked against Dessert here (that would cost an upstream call per HTTP request);
    a wrong key surfaces as the tool's `auth_invalid` error. Malformed keys are refused with 401.
    """

    def __init__(self, resource: str | None = None, *, max_kept: int = KEY_TOKENS_KEPT) -> None:
        self._resource = resource
        # The tokens of the keys calling most recently (and the refusals of malformed ones): a repeat does no work.
        self._verified = functools.lru_cache(maxsize=max_kept)(self._verify)

    async def verify_token(self, token: str) -> AccessToken | None:
        return self._verified(token.strip())

    def _verify(self, value: str) -> CallerToken | None:
        key, _problem = read_key(value)
        if key is None:
            return None
        digest = hashlib.sha256(value.encode()).hexdigest()
        return CallerToken.carrying(
            key,
            token=fingerprint(digest),
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
