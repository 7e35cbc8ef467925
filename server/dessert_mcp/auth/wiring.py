"""How the core plugs the auth wing in: what to pass to `MCPServer` and what to add to its HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable
from typing import Any, Final

from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dessert_mcp.auth.config import MCP_PATH, SCOPE, OAuthConfig
from dessert_mcp.auth.provider import DessertOAuthProvider
from dessert_mcp.auth.signin import SignInPages
from dessert_mcp.auth.store import StorageUnavailable, Store, default_database_url

logger = logging.getLogger("dessert_mcp.auth")

AS_METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
# Expired tokens, codes, sign-ins, throttle windows and abandoned clients are deleted this often, by one replica.
PRUNE_EVERY_S: Final = 3600.0
PRUNE_LEASE: Final = "prune"


class OAuthWiring:
    """`--auth oauth`: the provider, its database and the routes the SDK does not make.

    wiring = OAuthWiring(OAuthConfig.from_env())
    mcp = MCPServer(..., **wiring.server_kwargs())
    app = mcp.streamable_http_app(...)
    wiring.install(app)          # sign-in page, metadata with CIMD, throttles, 503 on database loss
    ...                          # serve app; at shutdown: await wiring.aclose()
    """

    def __init__(
        self,
        config: OAuthConfig,
        *,
        store: Store | None = None,
        clock: Callable[[], float] | None = None,
        prune_every_s: float = PRUNE_EVERY_S,
    ) -> None:
        self.config = config
        if store is None:
            url = config.database_url or default_database_url()
            store = Store(url) if clock is None else Store(url, clock=clock)
        self.store = store
        self.provider = DessertOAuthProvider(config, self.store)
        self.pages = SignInPages(self.provider)
        self.prune_every_s = prune_every_s
        # Names this process in the prune lease (for the operator reading the table), unique per process.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self._pruner: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"OAuthWiring({self.config.issuer!r}, {self.store!r})"

    @property
    def registration(self) -> ClientRegistrationOptions:
        return ClientRegistrationOptions(enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE])

    def auth_settings(self) -> AuthSettings:
        return AuthSettings(
            # Strings, so AuthSettings keeps a path-less issuer without a trailing slash (RFC 8414 compares exactly).
            issuer_url=self.config.issuer,
            resource_server_url=self.config.resource,
            required_scopes=[SCOPE],
            client_registration_options=self.registration,
            revocation_options=RevocationOptions(enabled=True),
            # The SDK refuses any token whose AccessToken.resource is not this server's /mcp (RFC 8707).
            validate_token_resource=True,
        )

    def server_kwargs(self) -> dict[str, Any]:
        return {"auth": self.auth_settings(), "auth_server_provider": self.provider}

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata for the endpoints the SDK serves, plus what this server adds (CIMD, RFC 9207 `iss`)."""
        issuer = self.config.issuer
        client_auth = ["client_secret_post", "client_secret_basic"]
        return {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "registration_endpoint": issuer + "/register",
            "scopes_supported": [SCOPE],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            # CIMD clients are public: they authenticate to /token with PKCE alone.
            "token_endpoint_auth_methods_supported": [*client_auth, "none"],
            "revocation_endpoint": issuer + "/revoke",
            "revocation_endpoint_auth_methods_supported": client_auth,
            "code_challenge_methods_supported": ["S256"],
            "client_id_metadata_document_supported": self.config.cimd_enabled,
            "authorization_response_iss_parameter_supported": True,
        }

    async def _metadata(self, request: Request) -> Response:
        return JSONResponse(self.metadata(), headers={"Cache-Control": "public, max-age=3600"})

    def install(self, app: Starlette) -> None:
        """Add the sign-in routes, our metadata document (ahead of the SDK's) and the guard middleware."""
        # Browser-based clients read the metadata cross-origin, as they read the SDK's own documents.
        metadata = CORSMiddleware(
            request_response(self._metadata),
            allow_origins=["*"],
            allow_methods=["GET", "OPTIONS"],
            allow_headers=["mcp-protocol-version"],
        )
        app.router.routes.insert(0, Route(AS_METADATA_PATH, endpoint=metadata, methods=["GET", "OPTIONS"]))
        app.router.routes.extend(self.pages.routes)
        app.add_middleware(AuthGuard, wiring=self)

    async def start(self) -> None:
        """Bring the schema up to date and start pruning. A database that is down now only delays that: requests
        get 503 meanwhile."""
        try:
            await self.store.migrate()
        except StorageUnavailable as exc:
            logger.error("%s Serving anyway; token requests answer 503 until it is back.", exc)
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever(), name="dessert-mcp prune")

    async def prune_once(self) -> int | None:
        """Prune if no replica has in the last `prune_every_s`; how many rows went, or None if it was not our turn."""
        if not await self.store.take_lease(PRUNE_LEASE, self.holder, ttl_s=self.prune_every_s):
            return None
        deleted = await self.store.prune()
        logger.info("Pruned %d expired rows from the token database", deleted)
        return deleted

    async def _prune_forever(self) -> None:
        # Off every request's path; the lease makes one replica do it per period, whichever wakes first.
        while True:
            try:
                await self.prune_once()
            except StorageUnavailable as exc:
                logger.warning("Pruning skipped: %s", exc)
            except Exception:  # a bug here must not end the schedule, nor reach the server
                logger.exception("Pruning failed")
            await asyncio.sleep(self.prune_every_s * random.uniform(0.5, 1.0))

    async def probe(self) -> str | None:
        """/readyz: None when the token database answers, else the reason code."""
        try:
            await self.store.ping()
        except StorageUnavailable as exc:
            logger.warning("Not ready: %s", exc)
            return exc.reason
        return None

    async def aclose(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        await self.provider.aclose()


class AuthGuard:
    """Outermost ASGI layer: throttles /token failures and /register, and turns a lost database into 503.

    Pure ASGI (no response rewriting): it answers by itself or passes the request through untouched.
    """

    def __init__(self, app: ASGIApp, wiring: OAuthWiring) -> None:
        self.app = app
        self.wiring = wiring
        self.config = wiring.config
        self.store = wiring.store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == MCP_PATH:
            # Every MCP request: its one database access is the token check, made before any answer starts.
            try:
                await self.app(scope, receive, send)
            except StorageUnavailable as exc:
                logger.error("%s", exc)
                await _unavailable(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if path == "/token" and message["status"] in (400, 401):
                    await self.store.throttle_hit(f"token:{address}", window_s=self.config.token_window_s)
            await send(message)

        try:
            if scope.get("method") == "POST" and path == "/token":
                failures = await self.store.throttle_count(f"token:{address}", window_s=self.config.token_window_s)
                if failures >= self.config.token_failures:
                    await _too_many(self.config.token_window_s)(scope, receive, send)
                    return
            if scope.get("method") == "POST" and path == "/register":
                hits = await self.store.throttle_hit(f"register:{address}", window_s=self.config.registration_window_s)
                if hits > self.config.registrations:
                    await _too_many(self.config.registration_window_s)(scope, receive, send)
                    return
            await self.app(scope, receive, tracking_send)
        except StorageUnavailable as exc:
            logger.error("%s", exc)
            if started:
                raise
            await _unavailable(scope, receive, send)


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(
        {
            "error": "temporarily_unavailable",
            "error_description": "dessert-mcp cannot reach its token database right now; retry shortly.",
        },
        status_code=503,
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )(scope, receive, send)


def _too_many(retry_after_s: int) -> JSONResponse:
    return JSONResponse(
        {"error": "slow_down", "error_description": "Too many requests from this address; wait and retry."},
        status_code=429,
        headers={"Retry-After": str(retry_after_s), "Cache-Control": "no-store"},
    )
