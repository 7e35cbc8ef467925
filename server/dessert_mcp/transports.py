"""The HTTP transports: streamable HTTP at `/mcp`, SSE at `/sse`, their guard, health checks and workers.

Starlette and uvicorn are imported inside the functions that need them, so `dessert-mcp` over stdio
does not pay for them at start-up.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

import anyio

from dessert_mcp.config import ConfigError, Secret, Settings
from dessert_mcp.redact import Redactor, configure_logging

if TYPE_CHECKING:
    import httpx2
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from dessert_mcp.app import DessertTools

logger = logging.getLogger("dessert_mcp")

HTTPTransport = Literal["sse", "http"]

MCP_PATH: Final = "/mcp"
SSE_PATH: Final = "/sse"
SSE_MESSAGE_PATH: Final = "/messages/"
HEALTH_PATHS: Final = ("/healthz", "/readyz")
# The tools take a few tiny arguments; anything near this size is a mistake or an attack.
MAX_BODY_BYTES: Final = 256 * 1024
# /readyz must answer within 5 s even when the API hangs; this leaves room for the rest of the request.
READY_TIMEOUT_S: Final = 3.0
# Probes arriving together share one upstream call; results are reused this long.
READY_CACHE_S: Final = 1.0
DEFAULT_PORT: Final = 8000
MIN_TOKEN_CHARS: Final = 16

AUTH_TOKEN_ENV: Final = "DESSERT_MCP_AUTH_TOKEN"
# How `--workers` hands the command line to worker processes that uvicorn spawns (see `create_app`).
OPTIONS_ENV: Final = "DESSERT_MCP_HTTP_OPTIONS"

_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True, slots=True)
class HTTPOptions:
    """How to serve MCP over HTTP; build it from the command line, then call `check`."""

    transport: HTTPTransport = "http"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    stateless: bool = False
    workers: int = 1
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    # The server's own bearer token (DESSERT_MCP_AUTH_TOKEN); never serialized into OPTIONS_ENV.
    auth_token: Secret | None = field(default=None, repr=False)

    def check(self, settings: Settings | None = None) -> HTTPOptions:
        """Refuse combinations that would be unsafe or broken, with a message that says what to do."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535; got {self.port}.")
        if self.workers < 1:
            raise ConfigError(f"--workers must be 1 or more; got {self.workers}.")
        if self.stateless and self.transport != "http":
            raise ConfigError("--stateless applies to --transport http only.")
        if self.workers > 1 and not (self.transport == "http" and self.stateless):
            raise ConfigError(
                "--workers above 1 needs --transport http --stateless: sessions (and SSE streams) live in one "
                "process, so a client's next request could reach a worker that does not know it."
            )
        for host in self.allowed_hosts:
            _parse_host(host, source="--allowed-host")
        for origin in self.allowed_origins:
            _parse_origin(origin)
        if not is_loopback(self.host) and not (self.allowed_hosts and self.allowed_origins):
            raise ConfigError(
                f"refusing to listen on {self.host}, which is reachable from other machines, without an explicit "
                "allow-list: pass --allowed-host with the host name(s) clients use to reach this server and "
                "--allowed-origin with the browser origin(s) allowed to call it (e.g. the server's own public "
                "origin), so DNS-rebinding and cross-site requests are refused. Set DESSERT_MCP_AUTH_TOKEN too."
            )
        key = settings.api_key if settings is not None else None
        if self.auth_token is not None and key is not None and _same(self.auth_token, key):
            raise ConfigError(
                f"{AUTH_TOKEN_ENV} must not be the Dessert API key: MCP clients would then hold the key. "
                "Generate a separate token (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)."
            )
        return self

    def to_env(self) -> str:
        data = asdict(self)
        data.pop("auth_token")
        return json.dumps(data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HTTPOptions:
        raw = environ.get(OPTIONS_ENV)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        data["allowed_hosts"] = tuple(data.get("allowed_hosts", ()))
        data["allowed_origins"] = tuple(data.get("allowed_origins", ()))
        return cls(**data, auth_token=read_auth_token(environ))


def _same(a: Secret, b: Secret) -> bool:
    return hmac.compare_digest(a.get().encode(), b.get().encode())


def read_auth_token(environ: Mapping[str, str]) -> Secret | None:
    """DESSERT_MCP_AUTH_TOKEN, the bearer token HTTP clients must send; None when unset."""
    value = environ.get(AUTH_TOKEN_ENV, "").strip()
    if not value:
        return None
    if not _TOKEN_CHARS.match(value) or len(value) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{AUTH_TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} printable characters without spaces "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)."
        )
    return Secret(value)


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _parse_host(value: str, *, source: str = "Host") -> tuple[str, str | None]:
    """`name[:port]` (IPv6 in brackets) to a lower-case name and an optional port."""
    text = value.strip().lower()
    if text.startswith("["):
        name, _, rest = text.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else None
        bad = bool(rest) and port is None
    else:
        name, sep, port_text = text.partition(":")
        port = port_text if sep else None
        bad = False
    if bad or not name or (port is not None and not port.isdigit()) or "*" in name or "/" in name:
        raise ConfigError(f"{source} must look like example.com or example.com:8443; got {value!r}.")
    return name, port


def _parse_origin(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(f"--allowed-origin must look like https://app.example.com[:port]; got {value!r}.")
    if parts.query or parts.fragment or "@" in parts.netloc or "*" in parts.netloc:
        raise ConfigError(f"--allowed-origin must look like https://app.example.com[:port]; got {value!r}.")
    return f"{parts.scheme}://{parts.netloc}"


class HostOriginPolicy:
    """Which `Host` and `Origin` headers may reach the MCP endpoints (DNS-rebinding protection)."""

    def __init__(self, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> None:
        self._hosts = [_parse_host(h, source="--allowed-host") for h in allowed_hosts]
        self._origins = {_parse_origin(o) for o in allowed_origins}

    def host_ok(self, header: str | None) -> bool:
        if not header:
            return False
        try:
            name, port = _parse_host(header)
        except ConfigError:
            return False
        if name in _LOOPBACK_NAMES:
            return True
        return any(name == a_name and (a_port is None or a_port == port) for a_name, a_port in self._hosts)

    def origin_ok(self, header: str | None) -> bool:
        # Browsers always send Origin on cross-site requests; clients that are not browsers usually send none.
        if header is None:
            return True
        try:
            origin = _parse_origin(header)
        except ConfigError:
            return False
        hostname = urlsplit(origin).hostname or ""
        return origin in self._origins or is_loopback(hostname)


def _sdk_security(options: HTTPOptions) -> TransportSecuritySettings:
    """The same allow-list for the SDK's own check, which runs again inside the transports."""
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
    for value in options.allowed_hosts:
        name, port = _parse_host(value)
        hosts += [f"{name}:{port}"] if port else [name, f"{name}:*"]
    origins = [f"{scheme}://{name}:*" for scheme in ("http", "https") for name in ("127.0.0.1", "localhost", "[::1]")]
    origins += [f"{scheme}://{name}" for scheme in ("http", "https") for name in ("127.0.0.1", "localhost", "[::1]")]
    origins += [_parse_origin(o) for o in options.allowed_origins]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _jsonrpc_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import JSONResponse

    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class Guard:
    """ASGI middleware in front of everything: Host, Origin, then the bearer token, in that order.

    Health checks skip these checks: load balancers probe them by IP and without credentials, and they reveal
    nothing but up/ready. Bodies over MAX_BODY_BYTES get 413 from the SDK's own limit inside the MCP endpoints.
    """

    def __init__(self, app: ASGIApp, *, policy: HostOriginPolicy, token: Secret | None) -> None:
        self._app = app
        self._policy = policy
        self._token = token.get().encode() if token is not None else None

    def _authorized(self, header: str) -> bool:
        assert self._token is not None
        scheme, _, credentials = header.partition(" ")
        # Compare even when the scheme is wrong, so the answer takes the same time either way.
        matches = hmac.compare_digest(credentials.strip().encode(), self._token)
        return scheme.lower() == "bearer" and matches

    def _refusal(self, scope: Scope) -> Response | None:
        seen: dict[bytes, str] = {}
        for name, value in scope["headers"]:  # one pass; the first of repeated headers counts
            if name in (b"host", b"origin", b"authorization") and name not in seen:
                seen[name] = value.decode("latin-1")
        if not self._policy.host_ok(seen.get(b"host")):
            return _jsonrpc_error(421, "Misdirected request: this server does not answer to that Host.")
        if not self._policy.origin_ok(seen.get(b"origin")):
            return _jsonrpc_error(403, "Forbidden: requests from this Origin are not allowed.")
        if self._token is not None and not self._authorized(seen.get(b"authorization", "")):
            return _jsonrpc_error(
                401,
                f"Unauthorized: send Authorization: Bearer <the server's {AUTH_TOKEN_ENV}>.",
                {"WWW-Authenticate": 'Bearer realm="dessert-mcp"'},
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        refusal = None if path in HEALTH_PATHS else self._refusal(scope)
        if refusal is not None:
            logger.info("Refused %s %s with HTTP %d", scope["method"], path, refusal.status_code)
            await refusal(scope, receive, send)
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
        logger.debug("%s %s answered %d by worker pid %d", scope["method"], path, status, os.getpid())


class Readiness:
    """`/readyz`: ask Dessert for the balance with a short deadline; ready only if the key is accepted."""

    def __init__(self, settings: Settings, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.tools: DessertTools | None = None
        self._timeout_s = timeout_s
        self._redact = Redactor(settings.api_key.get() if settings.api_key else None)
        self._lock = anyio.Lock()
        self._last: tuple[float, int, dict[str, str]] | None = None

    async def check(self) -> tuple[int, dict[str, str]]:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < READY_CACHE_S:
                return self._last[1], self._last[2]
            status, body = await self._probe()
            self._last = (time.monotonic(), status, body)
            return status, body

    async def _probe(self) -> tuple[int, dict[str, str]]:
        from dessert_mcp.client import DessertAPIError

        if self.tools is None:
            return 503, {"status": "not ready", "reason": "starting"}
        try:
            with anyio.fail_after(self._timeout_s):
                await self.tools.client.get_balance()
        except TimeoutError:
            return 503, {
                "status": "not ready",
                "reason": "timeout",
                "detail": f"Dessert did not answer within {self._timeout_s:g} s.",
            }
        except DessertAPIError as exc:
            return 503, {"status": "not ready", "reason": exc.code, "detail": self._redact(exc.message)}
        return 200, {"status": "ready"}


def build_app(
    settings: Settings, options: HTTPOptions, *, transport: httpx2.AsyncBaseTransport | None = None
) -> ASGIApp:
    """The ASGI app for `options.transport`, guarded, with `/healthz` and `/readyz`.

    `transport` replaces the network to Dessert for tests, as in `build_server`.
    """
    from starlette.responses import JSONResponse

    from dessert_mcp.app import build_server

    server = build_server(settings, transport=transport)
    readiness = Readiness(settings)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        status, body = await readiness.check()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    server.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)
    server.custom_route("/readyz", methods=["GET"], include_in_schema=False)(readyz)

    security = _sdk_security(options)
    if options.transport == "http":
        app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=options.stateless,
            max_request_body_size=MAX_BODY_BYTES,
            transport_security=security,
            host=options.host,
        )
    else:
        app = server.sse_app(
            sse_path=SSE_PATH,
            message_path=SSE_MESSAGE_PATH,
            max_request_body_size=MAX_BODY_BYTES,
            transport_security=security,
            host=options.host,
        )

    mcp_lifespan = server.settings.lifespan
    assert mcp_lifespan is not None  # build_server always sets it
    transport_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(starlette_app: Any) -> AsyncIterator[None]:
        # Holding the tools' lifespan for the life of the process keeps ONE Dessert HTTP client open, even
        # for SSE, where the SDK enters the lifespan again per connection (the tools count their users).
        async with mcp_lifespan(server) as tools:
            readiness.tools = tools
            async with transport_lifespan(starlette_app):
                yield
            readiness.tools = None

    app.router.lifespan_context = lifespan
    policy = HostOriginPolicy(options.allowed_hosts, options.allowed_origins)
    return Guard(app, policy=policy, token=options.auth_token)


def create_app() -> ASGIApp:
    """uvicorn's app factory (`dessert_mcp.transports:create_app`) for worker processes.

    Each worker rebuilds the settings from the environment the parent prepared in `serve_http`.
    """
    settings = Settings.from_env()
    options = HTTPOptions.from_env(os.environ).check(settings)
    key = settings.api_key.get() if settings.api_key else None
    token = options.auth_token.get() if options.auth_token else None
    configure_logging(settings.log_level, Redactor(key, token))
    return _app_to_serve(settings, options)


def _app_to_serve(settings: Settings, options: HTTPOptions) -> ASGIApp:
    """`build_app` in the process that will serve it, with its start-up heap frozen (see `app.freeze_heap`)."""
    from dessert_mcp.app import freeze_heap

    app = build_app(settings, options)
    freeze_heap()
    return app


def worker_environment(settings: Settings, options: HTTPOptions) -> dict[str, str]:
    """The variables that make `create_app` in a worker build what this process would build."""
    env = {
        "DESSERT_API_BASE_URL": settings.base_url,
        "DESSERT_MCP_TOOL_NAMES": settings.tool_names,
        "DESSERT_MCP_LOG_LEVEL": settings.log_level,
        "DESSERT_TIMEOUT_S": repr(settings.timeout_s),
        OPTIONS_ENV: options.to_env(),
    }
    if settings.api_key is not None:  # e.g. the sandbox's key; otherwise the inherited value stays as it was
        env["DESSERT_API_KEY"] = settings.api_key.get()
    return env


def serve_http(settings: Settings, options: HTTPOptions) -> None:
    """Run uvicorn until interrupted: in this process, or as `options.workers` worker processes."""
    import uvicorn

    key = settings.api_key.get() if settings.api_key else None
    token = options.auth_token.get() if options.auth_token else None
    configure_logging(settings.log_level, Redactor(key, token))
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_config": None,  # keep our stderr logging, with the key and token redacted
        "log_level": settings.log_level.lower(),
        "server_header": False,
        "http": "dessert_mcp.nodelay:NoDelayHTTPProtocol",  # see nodelay.py: --workers would leave Nagle on
        # Open SSE streams would otherwise hold shutdown forever.
        "timeout_graceful_shutdown": 5,
    }
    where = f"http://{options.host}:{options.port}"
    path = MCP_PATH if options.transport == "http" else SSE_PATH
    logger.info(
        "Serving MCP over %s at %s%s (%d worker%s)%s",
        "streamable HTTP" if options.transport == "http" else "SSE",
        where,
        path,
        options.workers,
        "" if options.workers == 1 else "s",
        "; bearer token required" if token else "",
    )
    if options.workers == 1:
        uvicorn.run(_app_to_serve(settings, options), **common)
        return
    # uvicorn spawns fresh interpreters: they get everything through the environment.
    os.environ.update(worker_environment(settings, options))
    uvicorn.run("dessert_mcp.transports:create_app", factory=True, workers=options.workers, **common)
