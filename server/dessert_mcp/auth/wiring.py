"""How the core plugs the auth wing in: what to pass to `MCPServer` and what to add to its HTTP app."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Collection
from typing import Any, Final
from urllib.parse import unquote

from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dessert_mcp.auth._crypto import token_hash
from dessert_mcp.auth.caller import has_bearer, unauthenticated
from dessert_mcp.auth.config import MCP_PATH, SCOPE, OAuthConfig
from dessert_mcp.auth.limits import MAX_QUERY_BYTES, CappedBody, Limit, answer, refund, reserve, scope_bucket
from dessert_mcp.auth.provider import SIGN_IN_PATH, DessertOAuthProvider
from dessert_mcp.auth.signin import SignInPages
from dessert_mcp.auth.store import StorageUnavailable, Store, default_database_url
from dessert_mcp.storage.chores import Chore

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
        self.pruner = Chore(self.store.db, PRUNE_LEASE, self._prune, every_s=prune_every_s, what="Pruning")

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
            # The provider refuses a token whose resource is not this server's /mcp (RFC 8707) when it reads it from
            # the database, so the SDK need not parse and compare it again on every request.
            validate_token_resource=False,
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
            "revocation_endpoint_auth_methods_supported": [*client_auth, "none"],
            "code_challenge_methods_supported": ["S256"],
            "client_id_metadata_document_supported": self.config.cimd_enabled,
            "authorization_response_iss_parameter_supported": True,
        }

    @property
    def resource_metadata_url(self) -> str:
        """The RFC 9728 document a 401 points at (served by the SDK)."""
        return self.config.issuer + "/.well-known/oauth-protected-resource" + MCP_PATH

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
        routes = app.router.routes
        routes.insert(0, Route(AS_METADATA_PATH, endpoint=metadata, methods=["GET", "OPTIONS"]))
        routes.extend(self.pages.routes)
        # The MCP endpoint first: every call is matched on the first try instead of after each OAuth route.
        routes.sort(key=lambda route: getattr(route, "path", None) != MCP_PATH)
        app.add_middleware(AuthGuard, wiring=self)

    async def start(self) -> None:
        """Bring the schema up to date and start pruning. A database that is down now only delays that: requests
        get 503 meanwhile."""
        try:
            await self.store.migrate()
        except StorageUnavailable as exc:
            logger.error("%s Serving anyway; token requests answer 503 until it is back.", exc)
        self.pruner.start()

    @property
    def holder(self) -> str:
        """This process's name in the database's leases (pruning, the ledger's poller)."""
        return self.pruner.holder

    async def prune_once(self) -> int | None:
        """Prune if no replica has in the last `prune_every_s`; how many rows went, or None if it was not our turn."""
        return await self.pruner.once()

    async def _prune(self) -> int:
        deleted = await self.store.prune()
        logger.info("Pruned %d expired rows from the token database", deleted)
        return deleted

    async def linked_subjects(self, subjects: Collection[str]) -> set[str] | None:
        """Those of the token `subjects` whose accounts are still linked (not revoked, with a live grant), for the
        ledger's poller; None while the database cannot say. Reads the rows of these accounts only: the poller asks
        about the few it polls on every round, however many accounts are linked."""
        ids = {subject.removeprefix(_SUBJECT_PREFIX): subject for subject in subjects}
        try:
            linked = await self.store.linked_accounts(ids.keys())
        except StorageUnavailable:
            return None
        return {ids[account_id] for account_id in linked}

    def on_account_revoked(self, listener: Callable[[str], None]) -> None:
        """Call `listener(subject)` when an account is revoked through this process (its tokens' subject)."""

        def revoked(*, grant_id: str | None, account_id: str | None) -> None:
            if account_id is not None:
                listener(_subject(account_id))

        self.store.on_revocation(revoked)

    async def probe(self) -> str | None:
        """/readyz: None when the token database answers, else the reason code."""
        try:
            await self.store.ping()
        except StorageUnavailable as exc:
            logger.warning("Not ready: %s", exc)
            return exc.reason
        return None

    async def aclose(self) -> None:
        await self.pruner.aclose()
        await self.provider.aclose()


_SUBJECT_PREFIX: Final = "acct:"


def _subject(account_id: str) -> str:
    """The subject an account's access tokens carry (see `DessertOAuthProvider`)."""
    return _SUBJECT_PREFIX + account_id


# The routes the auth wing adds (the SDK's OAuth endpoints and the sign-in pages): bodies capped, callers counted.
AUTH_ROUTES: Final = frozenset(
    {"/authorize", "/token", "/register", "/revoke", SIGN_IN_PATH, SIGN_IN_PATH + "/consent"}
)


class AuthGuard:
    """Outermost ASGI layer of `--auth oauth`: caps the auth routes' bodies as they are read, throttles /authorize,
    /token and /register (counting first), answers a credential-less /mcp request itself (RFC 6750 §3.1), and
    turns a lost database into 503.

    It answers by itself or passes the request through, with two exceptions on the SDK's answers, both for a
    standard the SDK's handlers miss: an error redirect from /authorize to a return address we do not trust is
    shown on our own page instead (RFC 9700 §4.11.2), and a 401 to a client that authenticated with HTTP Basic
    gets its `WWW-Authenticate: Basic` (RFC 6749 §5.2).
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
            if scope.get("method") != "OPTIONS" and not has_bearer(scope):
                await unauthenticated(send, self.wiring.resource_metadata_url)
                return
            # Every MCP request: its one database access is the token check, made before any answer starts.
            try:
                await self.app(scope, receive, send)
            except StorageUnavailable as exc:
                logger.error("%s", exc)
                await _unavailable(scope, receive, send)
            return
        if path not in AUTH_ROUTES:
            await self.app(scope, receive, send)
            return
        body = CappedBody(receive, send)
        if CappedBody.declared_too_large(scope):
            await body.refuse()
            return
        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            await answer(send, 414, {"error": "invalid_request", "error_description": "The query string is too long."})
            return
        try:
            await self._auth_route(scope, body)
        except StorageUnavailable as exc:
            logger.error("%s", exc)
            if body.started:
                raise
            await _unavailable(scope, receive, send)
        except Exception:
            if not body.refused:
                raise
            # The app gave up reading a body we cut off; the 413 has been sent.

    async def _auth_route(self, scope: Scope, body: CappedBody) -> None:
        path: str = scope["path"]
        post = scope.get("method") == "POST"
        bucket = scope_bucket(scope)
        config = self.config
        counted: list[Limit] = []
        window = 0
        receive: Receive = body.receive
        if post and path == "/token":
            # Read (capped) and parsed here, so the client and the account are known before anything is counted.
            data = await body.read_all()
            if data is None:
                return
            receive = body.replay(data)
            window = config.token_window_s
            counted = await self._token_limits(scope, await _form(scope, body.replay(data)), bucket)
            allowed = bool(counted)
        else:
            if post and path == "/register":
                counted, window = [Limit(f"register:{bucket}", config.registrations)], config.registration_window_s
            elif path == "/authorize":
                # Each /authorize may fetch a client's metadata document: count them all.
                counted, window = [Limit(f"authorize:{bucket}", config.authorizations)], config.authorization_window_s
            allowed = not counted or await reserve(self.store, counted, window_s=window)
        if not allowed:
            await answer(
                body.send,
                429,
                {"error": "slow_down", "error_description": "Too many requests; wait and retry."},
                {"Retry-After": str(window)},
            )
            return
        send: Send = body.send
        if path == "/authorize":
            send = self.pages.errors_on_our_page(scope, send)
        elif path in ("/token", "/revoke") and _authorization_scheme(scope) == "basic":
            send = _basic_challenge(send)
        if path == "/token":
            send = self._refund_success(send, counted)
        await self.app(scope, receive, send)

    def _refund_success(self, send: Send, counted: list[Limit]) -> Send:
        """/token counts failures only: a good exchange gives its places back, before its answer goes out (so the
        client's next request finds them). The tokens are issued by then: a database lost meanwhile costs the client
        its places in the window, never the answer."""

        async def refunding(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] not in (400, 401):
                try:
                    await refund(self.store, counted)
                except StorageUnavailable as exc:
                    logger.warning("A /token throttle refund was not recorded: %s", exc)
            await send(message)

        return refunding

    async def _token_limits(self, scope: Scope, form: dict[str, str], bucket: str) -> list[Limit]:
        """Count one /token request against its client, its account and its address, in that order (see `reserve`);
        the limits counted, or [] if one is past its most. A client or account counts only if it exists: made-up
        names are the address's to count, and write no throttle rows of their own."""
        config = self.config
        limits = []
        client_id = form.get("client_id") or _basic_client_id(scope)
        if client_id and await self.store.get_client(client_id) is not None:
            limits.append(Limit(f"token-client:{token_hash(client_id)}", config.token_failures_per_client))
        account_id = None
        if form.get("grant_type") == "refresh_token" and form.get("refresh_token"):
            refresh = await self.store.get_refresh_token(form["refresh_token"])
            account_id = refresh.account_id if refresh is not None else None
        elif form.get("grant_type") == "authorization_code" and form.get("code"):
            code = await self.store.get_code(form["code"])
            account_id = code.account_id if code is not None else None
        if account_id is not None:
            limits.append(Limit(f"token-account:{account_id}", config.token_failures_per_account))
        limits.append(Limit(f"token:{bucket}", config.token_failures))
        return limits if await reserve(self.store, limits, window_s=config.token_window_s) else []

    @property
    def pages(self) -> SignInPages:
        return self.wiring.pages


async def _form(scope: Scope, receive: Receive) -> dict[str, str]:
    """The text fields of a request's body, parsed as the SDK's handlers parse it (Starlette's form parser)."""
    request = Request(dict(scope), receive)
    try:
        form = await request.form()
    except (MultiPartException, HTTPException):
        return {}  # the SDK's handler refuses it too
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    await form.close()
    return fields


def _basic_client_id(scope: Scope) -> str | None:
    """The client id in an `Authorization: Basic` header (RFC 6749 §2.3.1: form-encoded, then base64)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value[:6].lower() == b"basic ":
            try:
                client_id = base64.b64decode(value[6:].strip(), validate=True).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                return None
            return unquote(client_id) or None
    return None


def _authorization_scheme(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return str(value.split(b" ", 1)[0].decode("latin-1").lower())
    return ""


def _basic_challenge(send: Send) -> Send:
    async def challenged(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            headers = [h for h in message.get("headers", []) if h[0].lower() != b"www-authenticate"]
            message = {**message, "headers": [*headers, (b"www-authenticate", b'Basic realm="dessert-mcp"')]}
        await send(message)

    return challenged


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(
        {
            "error": "temporarily_unavailable",
            "error_description": "dessert-mcp cannot reach its token database right now; retry shortly.",
        },
        status_code=503,
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )(scope, receive, send)
