"""`--auth oauth`: the SDK's authorization-server provider interface, backed by the database.

The SDK's handlers parse and check each request (PKCE S256 only, redirect URI exact match, client
authentication, the RFC 6749 error shapes); this class decides and remembers: who the clients are
(dynamic registration or Client ID Metadata Documents), which Dessert account a grant links, and the
life of every token (stored hashed, rotated, revoked by family).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from typing import Any, Final
from urllib.parse import urlencode

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl

from dessert_mcp.auth._crypto import KeyBox, new_token, token_hash
from dessert_mcp.auth.caller import CallerToken
from dessert_mcp.auth.cimd import ClientMetadataError, MetadataFetcher, is_metadata_url
from dessert_mcp.auth.config import SCOPE, OAuthConfig
from dessert_mcp.auth.pending import PendingSignIn, TooLarge
from dessert_mcp.auth.redirects import MAX_FIELD_CHARS, check_client_size, check_redirect_uris
from dessert_mcp.auth.store import StorageUnavailable, Store
from dessert_mcp.auth.tokencache import TokenCache, VerifiedToken
from dessert_mcp.cache import BuiltFrom
from dessert_mcp.config import Secret, fingerprint
from dessert_mcp.singleflight import SingleFlight

logger = logging.getLogger("dessert_mcp.auth")

SIGN_IN_PATH = "/signin"
_S256_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


class DessertAuthorizationCode(AuthorizationCode):
    grant_id: str


class DessertRefreshToken(RefreshToken):
    grant_id: str


class DessertAccessToken(CallerToken):
    grant_id: str


# AccessTokens kept built for the tokens calling most recently; beyond it one is built per request, as before.
ACCESS_TOKENS_KEPT: Final = 1024


def same_resource(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class DessertOAuthProvider:
    """An `OAuthAuthorizationServerProvider` for `MCPServer(auth_server_provider=...)`."""

    def __init__(self, config: OAuthConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.clock = store.clock
        self.box = KeyBox(
            config.encryption_key.get(), config.encryption_key_old.get() if config.encryption_key_old else None
        )
        self.metadata = MetadataFetcher(config)
        # Verified access tokens for a few seconds; revocations through this store evict them at once.
        self.tokens = TokenCache(config.token_cache_s, clock=store.clock)
        store.on_revocation(self.tokens.evict)
        # Requests that miss the token cache together (a burst as an entry expires) share one database read.
        self._token_reads: SingleFlight[VerifiedToken | None] = SingleFlight((StorageUnavailable,))
        # Requests with a cached token share the AccessToken built from its entry (a new entry: a new one).
        self._access_tokens: BuiltFrom[VerifiedToken, DessertAccessToken] = BuiltFrom(
            self._access_token, max_entries=ACCESS_TOKENS_KEPT
        )
        self._csrf_key = hashlib.sha256(b"dessert-mcp csrf\x00" + config.encryption_key.get().encode()).digest()

    def __repr__(self) -> str:
        return f"DessertOAuthProvider({self.config.issuer!r})"

    async def aclose(self) -> None:
        await self.metadata.aclose()
        await self.store.aclose()

    # -- clients ------------------------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        found = await self.store.get_client(client_id)
        if found is not None:
            kind, info, sealed, expires_at = found
            if kind != "cimd" or (expires_at is not None and expires_at > self.clock()):
                if sealed is not None:
                    info["client_secret"] = self.box.open(sealed, aad="client:" + client_id)
                return OAuthClientInformationFull.model_validate(info)
        if not (self.config.cimd_enabled and is_metadata_url(client_id)):
            return None
        try:
            client, ttl = await self.metadata.fetch(client_id)
        except ClientMetadataError as exc:
            logger.warning("client metadata document refused: %s", exc)
            return None
        await self.store.put_client(
            client_id,
            kind="cimd",
            info=client.model_dump(mode="json", exclude_none=True),
            secret_sealed=None,
            expires_at=self.clock() + ttl,
        )
        return client

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        uris = [str(u) for u in client_info.redirect_uris or []]
        try:
            check_redirect_uris(uris)
        except ValueError as exc:
            raise RegistrationError("invalid_redirect_uri", str(exc)) from None
        if is_metadata_url(client_info.client_id):  # the SDK mints uuids; never let one shadow a CIMD URL
            raise RegistrationError("invalid_client_metadata", "unexpected client_id")
        info = client_info.model_dump(mode="json", exclude_none=True)
        try:
            check_client_size(info)
        except ValueError as exc:
            raise RegistrationError("invalid_client_metadata", str(exc)) from None
        secret = info.pop("client_secret", None)
        sealed = self.box.seal(secret, aad="client:" + client_info.client_id) if secret else None
        await self.store.put_client(client_info.client_id, kind="dcr", info=info, secret_sealed=sealed)

    # -- /authorize ---------------------------------------------------------------------------------------

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and not same_resource(params.resource, self.config.resource):
            raise AuthorizeError("invalid_target", "this server only issues tokens for its own MCP endpoint")
        scopes = params.scopes or [SCOPE]
        if any(s != SCOPE for s in scopes):
            raise AuthorizeError("invalid_scope", f"the only scope is {SCOPE}")
        if not _S256_CHALLENGE.fullmatch(params.code_challenge):
            # RFC 7636 §4.2: an S256 challenge is the base64url SHA-256 of the verifier, 43 characters.
            raise AuthorizeError("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")
        if len(params.state or "") > MAX_FIELD_CHARS or len(str(params.redirect_uri)) > MAX_FIELD_CHARS:
            # Everything here is carried sealed in the sign-in link, then stored once a key checks: bounded.
            raise AuthorizeError(
                "invalid_request", f"state and redirect_uri are limited to {MAX_FIELD_CHARS} characters"
            )
        pending = PendingSignIn(
            client_id=client.client_id,
            params={
                "state": params.state,
                "scopes": scopes,
                "code_challenge": params.code_challenge,
                "redirect_uri": str(params.redirect_uri),
                "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
                "resource": self.config.resource,
            },
            expires_at=self.clock() + self.config.sign_in_ttl_s,
        )
        try:
            # Nothing is stored: the sign-in page gets it back, sealed (auth/pending.py).
            sealed = pending.seal(self.box)
        except TooLarge:
            raise AuthorizeError("invalid_request", "state and redirect_uri are too long together") from None
        return f"{self.config.issuer}{SIGN_IN_PATH}?{urlencode({'request': sealed})}"

    def open_sign_in(self, sealed: str) -> PendingSignIn | None:
        """The pending sign-in a sign-in link or form carries, if it is ours, intact and not expired."""
        return PendingSignIn.open(self.box, sealed, now=self.clock())

    def csrf_for(self, sign_in: str) -> str:
        """The sign-in's CSRF token: derived, so any replica can render the page; bound to a SameSite cookie."""
        return hmac.new(self._csrf_key, sign_in.encode(), hashlib.sha256).hexdigest()

    async def link_and_issue_code(
        self,
        *,
        client_id: str,
        key: Secret,
        params: dict[str, Any],
        key_hash_value: str,
    ) -> str:
        """After consent: store the account (key encrypted) and a fresh grant; returns the authorization code."""
        code = new_token("dmcp_code_")
        await self.store.link_account_and_issue_code(
            account_id=str(uuid.uuid4()),
            key_hash_value=key_hash_value,
            seal=lambda account_id: self.box.seal(key.get(), aad="account:" + account_id),
            key_masked=key.masked(),
            key_fingerprint=key.fingerprint(),
            grant_id=str(uuid.uuid4()),
            client_id=client_id,
            scopes=params["scopes"],
            resource=params["resource"],
            code=code,
            code_challenge=params["code_challenge"],
            redirect_uri=params["redirect_uri"],
            redirect_uri_explicit=bool(params["redirect_uri_provided_explicitly"]),
            code_ttl_s=self.config.code_ttl_s,
        )
        return code

    # -- /token: authorization code -----------------------------------------------------------------------

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> DessertAuthorizationCode | None:
        row = await self.store.get_code(authorization_code)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used:
            # RFC 6749 §4.1.2: a code used twice revokes what it already yielded.
            await self.store.revoke_grant(row.grant_id, "authorization code replayed")
            logger.warning("authorization code replayed; its grant was revoked")
            return None
        return DessertAuthorizationCode(
            code=authorization_code,
            scopes=row.scopes,
            expires_at=row.expires_at,
            client_id=row.client_id,
            code_challenge=row.code_challenge,
            redirect_uri=AnyUrl(row.redirect_uri),
            redirect_uri_provided_explicitly=row.redirect_uri_explicit,
            resource=row.resource,
            subject=f"acct:{row.account_id}",
            grant_id=row.grant_id,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: DessertAuthorizationCode
    ) -> OAuthToken:
        access, refresh = new_token("dmcp_at_"), new_token("dmcp_rt_")
        redeemed = await self.store.redeem_code(
            authorization_code.code,
            access=access,
            access_ttl_s=self.config.access_token_ttl_s,
            refresh=refresh,
            refresh_ttl_s=self.config.refresh_token_ttl_s,
        )
        if not redeemed:  # a concurrent exchange spent it between load and here
            await self.store.revoke_grant(authorization_code.grant_id, "authorization code replayed")
            raise TokenError("invalid_grant", "authorization code does not exist")
        return self._token_response(access, refresh, authorization_code.scopes)

    # -- /token: refresh ----------------------------------------------------------------------------------

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> DessertRefreshToken | None:
        row = await self.store.get_refresh_token(refresh_token)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used:
            # Reuse detection: a rotated-out refresh token came back, so someone holds a copy. End the family.
            await self.store.revoke_grant(row.grant_id, "refresh token replayed")
            logger.warning("refresh token replayed; its token family was revoked")
            return None
        return DessertRefreshToken(
            token=refresh_token,
            client_id=row.client_id,
            scopes=row.scopes,
            expires_at=int(row.expires_at),
            subject=f"acct:{row.account_id}",
            grant_id=row.grant_id,
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: DessertRefreshToken, scopes: list[str]
    ) -> OAuthToken:
        if refresh_token.expires_at is not None and refresh_token.expires_at < self.clock():
            raise TokenError("invalid_grant", "refresh token has expired")
        access, refresh = new_token("dmcp_at_"), new_token("dmcp_rt_")
        rotated = await self.store.rotate_refresh(
            refresh_token.token,
            access=access,
            access_ttl_s=self.config.access_token_ttl_s,
            refresh=refresh,
            refresh_ttl_s=self.config.refresh_token_ttl_s,
        )
        if not rotated:
            await self.store.revoke_grant(refresh_token.grant_id, "refresh token replayed")
            raise TokenError("invalid_grant", "refresh token does not exist")
        return self._token_response(access, refresh, scopes)

    def _token_response(self, access: str, refresh: str, scopes: list[str]) -> OAuthToken:
        return OAuthToken(
            access_token=access,
            expires_in=self.config.access_token_ttl_s,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    # -- every MCP request --------------------------------------------------------------------------------

    async def load_access_token(self, token: str) -> DessertAccessToken | None:
        """The live access token, from this process's token cache or else the database (then cached)."""
        digest = token_hash(token)
        verified = self.tokens.get(digest)
        if verified is None:
            # Keyed by the cache's generation too: a request after a revocation here never joins a read from before.
            generation = self.tokens.generation()
            verified = await self._token_reads.run(
                f"{generation} {digest}", lambda: self._read_access_token(token, digest, generation)
            )
            if verified is None:
                return None
        return self._access_tokens(verified)

    @staticmethod
    def _access_token(verified: VerifiedToken) -> DessertAccessToken:
        return DessertAccessToken.carrying(
            verified.key,
            token=verified.fingerprint,
            client_id=verified.client_id,
            scopes=list(verified.scopes),
            expires_at=int(verified.expires_at),
            resource=verified.resource,
            subject=f"acct:{verified.account_id}",
            grant_id=verified.grant_id,
        )

    async def _read_access_token(self, token: str, digest: str, generation: int) -> VerifiedToken | None:
        row = await self.store.get_access_token(token)
        if row is None:
            return None
        if not same_resource(row.resource, self.config.resource):
            # Issued for another deployment sharing the database (RFC 8707 audience): checked here, once per read,
            # rather than by the SDK on every request.
            logger.warning("Refused an access token issued for another resource: %s", row.resource)
            return None
        verified = VerifiedToken(
            grant_id=row.grant_id,
            account_id=row.account_id,
            fingerprint=fingerprint(digest),
            client_id=row.client_id,
            scopes=tuple(row.scopes),
            resource=row.resource,
            expires_at=row.expires_at,
            key=Secret(self.box.open(row.key_sealed, aad="account:" + row.account_id)),
        )
        self.tokens.put(digest, verified, generation=generation)
        return verified

    # -- /revoke (RFC 7009) -------------------------------------------------------------------------------

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        grant_id = getattr(token, "grant_id", None)
        if isinstance(grant_id, str):
            # An access token and its refresh token go together (the family), as the SDK's interface asks.
            await self.store.revoke_grant(grant_id, "revoked by the client")
