"""Who is calling: the token the SDK's bearer middleware accepted, and the Dessert key it stands for.

In both modes the verifier returns a `CallerToken`, an `AccessToken` that also carries the caller's
Dessert key (never serialized: a pydantic private attribute). The SDK keeps it in its per-request
context (`get_access_token()`), so a tool reads the key with `caller_token()` and nothing is stored.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import OrderedDict
from typing import Any, Final, Self, cast

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from pydantic import PrivateAttr
from starlette.types import Scope, Send

from dessert_mcp.auth.config import SCOPE
from dessert_mcp.auth.limits import answer
from dessert_mcp.config import Secret, fingerprint, read_key

DESSERT_KEY_CLIENT: Final = "dessert-key"
# Verified keys kept (with --auth dessert-key, the process holds each calling key in its Dessert client anyway).
KEY_TOKENS_KEPT: Final = 1024
# A key Dessert refused is refused here, without asking Dessert, for this long (digests only; bounded).
REFUSED_TTL_S: Final = 600.0
REFUSED_KEPT: Final = 100_000


class CallerToken(AccessToken):
    """An accepted bearer token plus the Dessert key to use for this request (not a field: never dumped)."""

    _key: Secret = PrivateAttr()
    _verdicts: KeyVerdicts | None = PrivateAttr(default=None)

    @classmethod
    def carrying(cls, key: Secret, *, verdicts: KeyVerdicts | None = None, **fields: Any) -> Self:
        """Built on every MCP request from what the verifier already checked, so not validated again."""
        token = cls.model_construct(**fields)
        token._key = key
        token._verdicts = verdicts
        return cast(Self, token)  # pydantic's mypy plugin types model_construct as the class it is defined on

    @property
    def key(self) -> Secret:
        return self._key

    def dessert_said(self, *, accepted: bool) -> None:
        """Dessert answered a call made with this token's key: remembered (--auth dessert-key) so that a refused key
        costs no further upstream call for a while, and a working one is never throttled as unknown."""
        if self._verdicts is not None and self.subject is not None:
            self._verdicts.record(self.subject, accepted=accepted)

    @property
    def key_hint(self) -> str:
        """What the caller checks when Dessert rejects this key: in these modes it is theirs, not the server's."""
        if self.client_id == DESSERT_KEY_CLIENT:
            return "Check the Dessert API key this request sends as its bearer token."
        return "Reconnect to sign in again with a current Dessert API key."

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # The dessert-key token's `token` is a fingerprint already; say so rather than show anything else.
        return [("client_id", self.client_id), ("subject", self.subject)]


class KeyVerdicts:
    """--auth dessert-key: what Dessert said about the keys this process has seen, by subject (`key:<sha256>`, never
    the key): the recent ones that worked (bounded), and the refused ones for `REFUSED_TTL_S` (bounded)."""

    def __init__(self, *, kept: int = KEY_TOKENS_KEPT, refused_kept: int = REFUSED_KEPT) -> None:
        self._good: OrderedDict[str, None] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()
        self._kept = kept
        self._refused_kept = refused_kept

    def record(self, subject: str, *, accepted: bool) -> None:
        table: OrderedDict[str, Any] = self._good if accepted else self._refused
        (self._refused if accepted else self._good).pop(subject, None)
        table.pop(subject, None)
        table[subject] = None if accepted else time.monotonic() + REFUSED_TTL_S
        while len(table) > (self._kept if accepted else self._refused_kept):
            table.popitem(last=False)

    def is_good(self, subject: str) -> bool:
        return subject in self._good

    def is_refused(self, subject: str) -> bool:
        until = self._refused.get(subject)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._refused[subject]
        return False


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

    The key is not checked against Dessert here (that would cost an upstream call per new key): the tool's own call
    tells, through `CallerToken.dessert_said`, and a key Dessert refused is refused here with 401 for a while.
    Malformed keys are refused with 401. `keygate.DessertKeyGate` throttles keys not yet seen to work.
    """

    def __init__(self, resource: str | None = None, *, max_kept: int = KEY_TOKENS_KEPT) -> None:
        self._resource = resource
        self.verdicts = KeyVerdicts(kept=max_kept)
        # The tokens of the keys calling most recently (and the refusals of malformed ones): a repeat does no work.
        self._verified = functools.lru_cache(maxsize=max_kept)(self._verify)

    async def verify_token(self, token: str) -> AccessToken | None:
        verified = self._verified(token.strip())
        if verified is None or (verified.subject is not None and self.verdicts.is_refused(verified.subject)):
            return None  # a key Dessert refused lately: 401 without asking it again
        return verified

    def _verify(self, value: str) -> CallerToken | None:
        key, _problem = read_key(value)
        if key is None:
            return None
        return CallerToken.carrying(
            key,
            verdicts=self.verdicts,
            token=fingerprint(key_subject(value).removeprefix("key:")),
            client_id=DESSERT_KEY_CLIENT,
            scopes=[SCOPE],
            subject=key_subject(value),
            resource=self._resource,
        )


def key_subject(value: str) -> str:
    """The stable, non-secret id of a Dessert key: `key:<sha256 of it>`."""
    return "key:" + hashlib.sha256(value.encode()).hexdigest()


def has_bearer(scope: Scope) -> bool:
    """Whether the request carries any `Authorization: Bearer` credential (valid or not)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return bool(value[:7].lower() == b"bearer ")
    return False


async def unauthenticated(send: Send, resource_metadata: str | None) -> None:
    """401 for a request with no credential at all: a challenge without an error code (RFC 6750 §3.1), naming the
    scope to ask for and, with OAuth, where the protected-resource metadata is (RFC 9728, MCP authorization)."""
    params = [f'scope="{SCOPE}"']
    if resource_metadata is not None:
        params.insert(0, f'resource_metadata="{resource_metadata}"')
    await answer(
        send,
        401,
        {"error_description": "Authentication required: send Authorization: Bearer <token>."},
        {"WWW-Authenticate": "Bearer " + ", ".join(params)},
    )


def dessert_key_server_kwargs(public_url: str = "http://127.0.0.1") -> dict[str, Any]:
    """`MCPServer(**dessert_key_server_kwargs())` for `--auth dessert-key`: a verifier and nothing stored.

    No authorization server is advertised (there is none); a request without a key gets 401.
    """
    return {
        "auth": AuthSettings(issuer_url=public_url, resource_server_url=None, required_scopes=[SCOPE]),
        "token_verifier": DessertKeyVerifier(),
    }
