"""The ASGI app: the SDK's MCP endpoint mounted under our lifespan, health checks, and the bearer-token guard.

Host and Origin (DNS-rebinding protection), the body cap and the spec's 4xx answers are the SDK's own transport
security; this module only adds what it cannot express: probes that answer any Host, and the server's token.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final

import anyio
import httpx2
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dessert_mcp.client import DessertAPIError
from dessert_mcp.config import Secret, Settings
from dessert_mcp.http.options import AUTH_TOKEN_ENV, HTTPOptions, parse_host, parse_origin
from dessert_mcp.singleflight import SingleFlight
from dessert_mcp.tools import DessertService, build_server

logger = logging.getLogger("dessert_mcp")

MCP_PATH: Final = "/mcp"
SSE_PATH: Final = "/sse"
SSE_MESSAGE_PATH: Final = "/messages/"
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
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class TokenGuard:
    """ASGI middleware: every request except the health checks carries `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: Secret | None) -> None:
        self._app = app
        self._token = token.get().encode() if token is not None else None

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        scheme, _, credentials = header.partition(" ")
        # Compare even when the scheme is wrong, so the answer takes the same time either way.
        matches = hmac.compare_digest(credentials.strip().encode("latin-1", "replace"), self._token)
        return scheme.lower() == "bearer" and matches

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
        status = 0

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self._app(scope, receive, send_and_watch)
        # Lets tests (and operators) see which worker process served a request.
        logger.debug("%s %s answered %d by worker pid %d", scope["method"], scope["path"], status, os.getpid())


_UNAUTHORIZED: Final = f"Unauthorized: send Authorization: Bearer <the server's {AUTH_TOKEN_ENV}>."


class Readiness:
    """`/readyz`: ask Dessert for the balance with a short deadline; ready only if the key is accepted.

    Probes arriving together share one upstream call. The answer names a reason code only: anyone can ask, so
    the upstream detail goes to the log.
    """

    def __init__(self, service: DessertService, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        self._service = service
        self._timeout_s = timeout_s
        self._probes: SingleFlight[tuple[int, dict[str, str]]] = SingleFlight(())

    async def check(self) -> tuple[int, dict[str, str]]:
        return await self._probes.run("ready", self._probe)

    async def _probe(self) -> tuple[int, dict[str, str]]:
        try:
            with anyio.fail_after(self._timeout_s):
                await self._service.client.get_balance()
        except TimeoutError:
            logger.warning("Not ready: Dessert did not answer within %g s", self._timeout_s)
            return 503, {"status": "not ready", "reason": "timeout"}
        except DessertAPIError as exc:
            logger.warning("Not ready (%s): %s", exc.code, exc.message)
            return 503, {"status": "not ready", "reason": exc.code}
        except RuntimeError:  # the lifespan has not opened the client yet, or has closed it
            return 503, {"status": "not ready", "reason": "starting"}
        return 200, {"status": "ready"}


def build_app(
    settings: Settings, options: HTTPOptions, *, transport: httpx2.AsyncBaseTransport | None = None
) -> ASGIApp:
    """The ASGI app for `options.transport`, guarded, with `/healthz` and `/readyz`.

    `transport` replaces the network to Dessert for tests, as in `build_server`.
    """
    service = DessertService(settings, transport=transport)
    server = build_server(settings, service=service)
    readiness = Readiness(service)
    security = transport_security(options)
    if options.transport == "http":
        mcp_app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=not options.stateful,
            max_request_body_size=MAX_BODY_BYTES,
            session_idle_timeout=STATEFUL_IDLE_TIMEOUT_S,
            max_sessions=STATEFUL_MAX_SESSIONS,
            transport_security=security,
            host=options.host,
        )
    else:
        mcp_app = server.sse_app(
            sse_path=SSE_PATH,
            message_path=SSE_MESSAGE_PATH,
            max_request_body_size=MAX_BODY_BYTES,
            transport_security=security,
            host=options.host,
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        status, body = await readiness.check()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    endpoint = MCP_PATH if options.transport == "http" else SSE_PATH

    async def home(request: Request) -> Response:
        return PlainTextResponse(
            f"This is dessert-mcp, an MCP server. MCP clients connect to {endpoint} on this host "
            f"({'streamable HTTP' if options.transport == 'http' else 'SSE'}); see `dessert-mcp --help`.\n"
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # The host app owns the lifespan (a mounted app's own never runs): the Dessert client stays open for
        # the life of the process, however often the SDK enters the server's lifespan per session or request.
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(service.running())
            if options.transport == "http":
                await stack.enter_async_context(server.session_manager.run())
            yield

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/", home, methods=["GET"]),
        Mount("/", app=mcp_app),
    ]
    host = Starlette(routes=routes, lifespan=lifespan)
    if options.transport != "http":
        return TokenGuard(host, options.auth_token)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Calls to the MCP endpoint skip the host app's error and routing layers: the SDK's app has its own.
        target = mcp_app if scope["type"] == "http" and scope["path"] == MCP_PATH else host
        await target(scope, receive, send)

    return TokenGuard(app, options.auth_token)
