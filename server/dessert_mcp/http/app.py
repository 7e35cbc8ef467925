"""The ASGI app: the SDK's MCP endpoint mounted under our lifespan, health checks, and the bearer-token guard.

Host and Origin (DNS-rebinding protection), the body cap and the spec's 4xx answers are the SDK's own transport
security; this module only adds what it cannot express: probes that answer any Host, and the server's token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dessert_mcp.asgi import WatchedSend
from dessert_mcp.auth.config import MCP_PATH
from dessert_mcp.client import DessertAPIError
from dessert_mcp.config import Secret, Settings
from dessert_mcp.http.options import AUTH_TOKEN_ENV, METRICS_TOKEN_ENV, HTTPOptions, parse_host, parse_origin
from dessert_mcp.observe import metrics_installed
from dessert_mcp.service import DessertService
from dessert_mcp.singleflight import SingleFlight
from dessert_mcp.telemetry import NO_OBSERVER
from dessert_mcp.tools import build_server

if TYPE_CHECKING:
    from dessert_mcp.auth.wiring import OAuthWiring

logger = logging.getLogger("dessert_mcp")

SSE_PATH: Final = "/sse"
SSE_MESSAGE_PATH: Final = "/messages/"
METRICS_PATH: Final = "/metrics"
HEALTH_PATHS: Final = frozenset({"/healthz", "/readyz"})
# The tools take a few tiny arguments; anything near this size is a mistake or an attack.
MAX_BODY_BYTES: Final = 256 * 1024
# /readyz must answer within 5 s even when the API hangs; this leaves room for the rest of the request.
READY_TIMEOUT_S: Final = 3.0
# Sessions only exist with --stateful; these bound what abandoned ones can hold.
STATEFUL_MAX_SESSIONS: Final = 1000
STATEFUL_IDLE_TIMEOUT_S: Final = 300.0
_LOOPBACK: Final = ("127.0.0.1", "localhost", "[::1]")


def transport_security(options: HTTPOptions) -> TransportSecuritySettings:
    """Loopback names and origins, plus the operator's allow-lists, for the SDK's Host and Origin checks."""
    hosts = [h for name in _LOOPBACK for h in (name, f"{name}:*")]
    for value in options.allowed_hosts:
        name, port = parse_host(value)
        hosts += [f"{name}:{port}"] if port else [name, f"{name}:*"]
    origins = [o for s in ("http", "https") for name in _LOOPBACK for o in (f"{s}://{name}", f"{s}://{name}:*")]
    origins += [parse_origin(o) for o in options.allowed_origins]
    if options.public_url is not None:  # --auth oauth: the URL people add is where their clients arrive
        hosts.append(urlsplit(options.public_url).netloc)
        origins.append(options.public_url)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def bearer_matches(scope: Scope, token: bytes) -> bool:
    """The request carries `Authorization: Bearer <token>`, compared in constant time."""
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
    scheme, _, credentials = header.partition(" ")
    # Compare even when the scheme is wrong, so the answer takes the same time either way.
    matches = hmac.compare_digest(credentials.strip().encode("latin-1", "replace"), token)
    return scheme.lower() == "bearer" and matches


class TokenGuard:
    """ASGI middleware: every request except the health checks carries `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: Secret | None) -> None:
        self._app = app
        self._token = token.get().encode() if token is not None else None

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        return bearer_matches(scope, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self._app(scope, receive, send)
            return
        if self._token is not None and not self._authorized(scope):
            logger.info("Refused %s %s with HTTP 401", scope["method"], scope["path"])
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": _UNAUTHORIZED}}
            response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="dessert-mcp"'})
            await response(scope, receive, send)
            return
        if not logger.isEnabledFor(logging.DEBUG):
            await self._app(scope, receive, send)
            return
        watched = WatchedSend(send)
        await self._app(scope, receive, watched)
        # Lets tests (and operators) see which worker process served a request.
        logger.debug("%s %s answered %d by worker pid %d", scope["method"], scope["path"], watched.status, os.getpid())


_UNAUTHORIZED: Final = f"Unauthorized: send Authorization: Bearer <the server's {AUTH_TOKEN_ENV}>."

BROWSER_HINT: Final = (
    "This is dessert-mcp's MCP endpoint (streamable HTTP), for MCP clients rather than browsers: "
    "give this URL to an MCP host or client as a streamable HTTP server.\n"
)
_MCP_HEADERS: Final = frozenset({b"mcp-session-id", b"mcp-protocol-version", b"last-event-id"})
NO_STREAM: Final = (
    "This stateless MCP endpoint has no server-to-client event stream: send MCP requests with POST (the streams "
    "come with --stateful).\n"
)


def _has_no_stream(scope: Scope, *, stateful: bool, caller_auth: bool) -> bool:
    """A GET for the server-to-client stream of a stateless endpoint, where nothing could ever be sent on it.

    The spec lets a server without that stream answer 405; held open, it only made every client keep an idle
    connection, and probes that wait for an answer (Codex's login check) wait out their own timeout. With caller
    auth, a GET without credentials still goes to the SDK: its 401 is how clients learn that they must sign in.
    """
    if stateful or scope["method"] != "GET":
        return False
    return not caller_auth or any(name == b"authorization" for name, _ in scope["headers"])


def _is_browser(scope: Scope) -> bool:
    """A browser opening the MCP endpoint: a GET that accepts text/html and not text/event-stream, with no MCP header.

    An MCP client's GET must accept text/event-stream (the spec's streamable HTTP transport), so it always passes.
    """
    if scope["method"] != "GET":
        return False
    headers = dict(scope["headers"])
    accept = headers.get(b"accept", b"").lower()
    if b"text/html" not in accept or b"text/event-stream" in accept:
        return False
    return not _MCP_HEADERS.intersection(headers)


async def _until_the_client_leaves(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a stateless POST, and stop working on it if its client disconnects before the answer is sent.

    Answered as one JSON body (`json_response`), the SDK waits for the result without listening to the client, so a
    call the client gave up on (its connection closed) would run to its deadline, upstream request included; an
    event-stream answer notices the disconnect by itself. So once the body has been read, `receive` is watched by a
    plain task and the request cancelled when the client goes; the SDK's stateless handler still terminates its
    per-request server, shielded, when cancelled. A task group per request would cost every call its set-up and the
    wait for the watcher's end; the watcher here is cancelled without being waited for.
    """
    answer = WatchedSend(send)
    watcher: asyncio.Task[None] | None = None

    with anyio.CancelScope() as request:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not answer.finished:  # after the answer, a server reports the end of the exchange as a disconnect too
                request.cancel()

        async def receive_body() -> Message:
            nonlocal watcher
            message = await receive()
            if watcher is None and (message["type"] != "http.request" or not message.get("more_body", False)):
                watcher = asyncio.get_running_loop().create_task(watch())
            return message

        try:
            await app(scope, receive_body, answer)
        finally:
            if watcher is not None:
                watcher.cancel()


Probe = Callable[[], Awaitable[str | None]]


async def _ready(probe: Probe) -> tuple[int, dict[str, str]]:
    """`/readyz`: run the probe with a short deadline; ready only if it finds nothing wrong.

    The answer names a reason code only: anyone can ask, so the detail goes to the log.
    """
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            reason = await probe()
    except TimeoutError:
        logger.warning("Not ready: no answer within %g s", READY_TIMEOUT_S)
        reason = "timeout"
    if reason is not None:
        return 503, {"status": "not ready", "reason": reason}
    return 200, {"status": "ready"}


async def _dessert_probe(service: DessertService) -> str | None:
    """Single-key mode: ask Dessert for the balance; ready only if the key is accepted."""
    try:
        await service.client.get_balance()
    except DessertAPIError as exc:
        logger.warning("Not ready (%s): %s", exc.code, exc.message)
        return exc.code
    except RuntimeError:  # the lifespan has not opened the client yet, or has closed it
        return "starting"
    return None


async def _stateless_probe() -> str | None:
    # --auth dessert-key keeps nothing of its own and has no key to try: up is ready.
    return None


def _auth(
    settings: Settings, options: HTTPOptions, clock: Callable[[], float] | None = None
) -> tuple[dict[str, Any] | None, OAuthWiring | None]:
    """The MCPServer auth arguments for `options.auth`, and the OAuth wiring (this process's own) when there is one."""
    if options.auth == "dessert-key":
        from dessert_mcp.auth.caller import dessert_key_server_kwargs

        return dessert_key_server_kwargs(), None
    if options.auth == "oauth":
        assert options.oauth is not None  # HTTPOptions.check
        from dessert_mcp.auth.wiring import OAuthWiring

        # Keys pasted on the sign-in page are checked where the tools call: this server's Dessert origin.
        config = replace(options.oauth, dessert_base_url=settings.base_url)
        wiring = OAuthWiring(config, clock=clock)
        return wiring.server_kwargs(), wiring
    return None, None


def build_app(
    settings: Settings,
    options: HTTPOptions,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    service: DessertService | None = None,
    auth_clock: Callable[[], float] | None = None,
    sdk_spans: bool = True,
) -> ASGIApp:
    """The ASGI app for `options.transport`, guarded, with `/healthz` and `/readyz`.

    `transport` replaces the network to Dessert for tests, `service` the tools' state and `sdk_spans` as in
    `build_server`. With `options.auth` every caller brings their own credential: the SDK answers 401 without one,
    and the tools use the caller's key. `auth_clock` replaces the token database's clock for tests (expiries, the
    token cache).
    """
    auth, wiring = _auth(settings, options, auth_clock)
    metrics = None
    if metrics_installed():
        from dessert_mcp.observe.metrics import Metrics

        metrics = Metrics()
    service = service or DessertService(
        settings, transport=transport, per_account=auth is not None, observer=metrics or NO_OBSERVER
    )
    server = build_server(settings, service=service, auth=auth, sdk_spans=sdk_spans)
    fanout = None
    if options.redis_url is not None:
        from dessert_mcp.fanout import RedisFanout

        # Replicas (and workers) share their events: an alert raised where the account is polled reaches its
        # listeners wherever they are connected.
        fanout = RedisFanout(options.redis_url, service.remote_event)
        service.events.relay = fanout
    if wiring is not None:
        # The poller forgets revoked accounts at once (replicas take turns under a lease in the ledger's database).
        service.linked_subjects = wiring.linked_subjects
        wiring.on_account_revoked(service.stop_polling)
        probe: Probe = wiring.probe
    else:
        probe = _stateless_probe if options.auth else partial(_dessert_probe, service)
    ready = partial(_ready, probe)
    readiness: SingleFlight[tuple[int, dict[str, str]]] = SingleFlight(())  # probes arriving together share one run
    security = transport_security(options)
    if options.transport == "http":
        mcp_app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=not options.stateful,
            # Stateless requests have no server-to-client stream to keep and the tools send nothing before their
            # result, so each answer is one JSON body rather than an SSE stream per POST. The SDK still streams what
            # must stream (2026-07-28 `subscriptions/listen`); --stateful keeps its streams.
            json_response=not options.stateful,
            max_request_body_size=MAX_BODY_BYTES,
            session_idle_timeout=STATEFUL_IDLE_TIMEOUT_S,
            max_sessions=STATEFUL_MAX_SESSIONS,
            transport_security=security,
            host=options.host,
        )
        if wiring is not None:
            wiring.install(mcp_app)
        endpoint, kind = MCP_PATH, "streamable HTTP"
    else:
        mcp_app = server.sse_app(
            sse_path=SSE_PATH,
            message_path=SSE_MESSAGE_PATH,
            max_request_body_size=MAX_BODY_BYTES,
            transport_security=security,
            host=options.host,
        )
        endpoint, kind = SSE_PATH, "SSE"

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        status, body = await readiness.run("ready", ready)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    metrics_token = options.metrics_token.get().encode() if options.metrics_token is not None else None

    async def metrics_page(request: Request) -> Response:
        # Behind the token guard like everything but the probes: the figures describe the server's traffic. With
        # --auth there is no server token (every caller brings their own), so the scraper has a token of its own.
        if options.auth is not None and metrics_token is None:
            return PlainTextResponse(f"With --auth, /metrics needs {METRICS_TOKEN_ENV}.\n", status_code=403)
        if metrics_token is not None and not bearer_matches(request.scope, metrics_token):
            return PlainTextResponse(
                f"Send Authorization: Bearer <{METRICS_TOKEN_ENV}>.\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="dessert-mcp metrics"'},
            )
        if metrics is None:
            return PlainTextResponse("Metrics are off: install dessert-mcp[metrics].\n", status_code=404)
        return Response(metrics.render(), headers={"Content-Type": metrics.content_type, "Cache-Control": "no-store"})

    async def home(request: Request) -> Response:
        return PlainTextResponse(
            f"This is dessert-mcp, an MCP server. MCP clients connect to {endpoint} on this host ({kind}); "
            "see `dessert-mcp --help`.\n"
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # The host app owns the lifespan (a mounted app's own never runs): the Dessert client stays open for
        # the life of the process, however often the SDK enters the server's lifespan per session or request.
        async with AsyncExitStack() as stack:
            if wiring is not None:
                stack.push_async_callback(wiring.aclose)
                await wiring.start()
            if fanout is not None:
                await stack.enter_async_context(fanout.running())
            await stack.enter_async_context(service.running())
            if options.transport == "http":
                await stack.enter_async_context(server.session_manager.run())
            yield

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route(METRICS_PATH, metrics_page, methods=["GET"]),
        Route("/", home, methods=["GET"]),
        Mount("/", app=mcp_app),
    ]
    host = Starlette(routes=routes, lifespan=lifespan)
    if options.transport != "http":
        return TokenGuard(host, options.auth_token)
    hint = PlainTextResponse(BROWSER_HINT, headers={"Cache-Control": "no-store"})
    no_stream = PlainTextResponse(NO_STREAM, status_code=405, headers={"Allow": "POST", "Cache-Control": "no-store"})
    no_stream_for = partial(_has_no_stream, stateful=options.stateful, caller_auth=auth is not None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Calls to the MCP endpoint skip the host app's error and routing layers: the SDK's app has its own.
        if scope["type"] != "http" or scope["path"] != MCP_PATH:
            await host(scope, receive, send)
        elif _is_browser(scope):  # one line instead of an endless event stream
            await hint(scope, receive, send)
        elif no_stream_for(scope):
            await no_stream(scope, receive, send)
        elif options.stateful or scope["method"] != "POST":
            await mcp_app(scope, receive, send)
        else:
            await _until_the_client_leaves(mcp_app, scope, receive, send)

    served: ASGIApp = app
    if auth is not None and options.auth == "dessert-key":
        from dessert_mcp.auth.keygate import DessertKeyGate

        served = DessertKeyGate(app, auth["token_verifier"].verdicts)  # keys not yet seen to work are throttled
    return TokenGuard(served, options.auth_token)
