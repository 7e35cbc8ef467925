"""How to serve MCP over HTTP, from the command line, with the checks that refuse unsafe combinations."""

from __future__ import annotations

import hmac
import importlib.util
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, get_args
from urllib.parse import urlsplit

from dessert_mcp.auth.config import OPERATOR_KEY_REFUSED, AuthMode
from dessert_mcp.config import (
    HTTP_ONLY,
    PRINTABLE_TOKEN,
    WITH_AUTH,
    ConfigError,
    Secret,
    Settings,
    from_environ,
    is_loopback,
    setting,
)

if TYPE_CHECKING:  # the rest of the auth wing loads only for --auth oauth (it needs the `remote` extra)
    from dessert_mcp.auth.config import OAuthConfig

HTTPTransport = Literal["sse", "http"]
REMOTE_EXTRA: Final = ("sqlalchemy", "aiosqlite", "asyncpg", "cryptography")

DEFAULT_PORT: Final = 8000
MIN_TOKEN_CHARS: Final = 16
AUTH_TOKEN_ENV: Final = "DESSERT_MCP_AUTH_TOKEN"
REDIS_URL_ENV: Final = "DESSERT_MCP_REDIS_URL"
METRICS_TOKEN_ENV: Final = "DESSERT_MCP_METRICS_TOKEN"
TRUSTED_PROXIES_ENV: Final = "DESSERT_MCP_TRUSTED_PROXIES"
_TOKEN_HINT: Final = "`python -c 'import secrets; print(secrets.token_urlsafe())'`"


def read_token(value: str, name: str) -> Secret:
    """A bearer token the server checks (DESSERT_MCP_AUTH_TOKEN, DESSERT_MCP_METRICS_TOKEN)."""
    if not PRINTABLE_TOKEN.match(value) or len(value) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{name} must be at least {MIN_TOKEN_CHARS} printable characters without spaces (e.g. {_TOKEN_HINT})."
        )
    return Secret(value)


def read_redis_url(value: str, name: str) -> Secret:
    """A Redis (or Valkey) URL; kept secret, as it may carry a password (and never quoted back)."""
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ConfigError(
            f"{name} must look like redis://[:password@]host:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock)."
        )
    return Secret(value)


def redis_password(url: Secret | None) -> Secret | None:
    """The password inside a Redis URL, which the logs must hide."""
    password = urlsplit(url.get()).password if url is not None else None
    return Secret(password) if password else None


@dataclass(frozen=True, slots=True)
class HTTPOptions:
    """How to serve MCP over HTTP; build it with `from_env` (the command line's options win), then call `check`."""

    transport: HTTPTransport = "http"
    host: str = setting(None, None, "address to listen on", "127.0.0.1", option="--host")
    port: int = setting(None, None, "port to listen on", DEFAULT_PORT, option="--port")
    # Off by default: a read-only server sends nothing unprompted.
    stateful: bool = setting(
        None,
        None,
        "http only: sessions (Mcp-Session-Id) for handshake-era clients; off by default, so any worker or replica "
        "serves any request and abandoned sessions cost nothing",
        False,
        option="--stateful",
    )
    workers: int = setting(None, None, "worker processes (not with --stateful)", 1, option="--workers")
    allowed_hosts: tuple[str, ...] = setting(
        None,
        None,
        "a Host header to accept besides loopback names (repeatable; required off loopback)",
        (),
        option="--allowed-host",
        metavar="HOST[:PORT]",
    )
    allowed_origins: tuple[str, ...] = setting(
        None,
        None,
        "a browser Origin to accept besides loopback ones, e.g. https://app.example.com (repeatable)",
        (),
        option="--allowed-origin",
        metavar="ORIGIN",
    )
    # None by default: any process that can reach the port could otherwise name any client address and reset
    # per-address throttles.
    trusted_proxies: tuple[str, ...] = setting(
        TRUSTED_PROXIES_ENV,
        lambda value, name: tuple(part.strip() for part in value.split(",") if part.strip()),
        "comma-separated addresses or networks (`10.0.0.5,10.1.0.0/16`) of reverse proxies whose `X-Forwarded-For` "
        "is believed (the option is repeatable); with none, the connecting address is the client for every "
        "per-address limit.",
        (),
        applies=HTTP_ONLY,
        option="--trusted-proxy",
        metavar="ADDRESS[/BITS]",
    )
    auth_token: Secret | None = setting(
        AUTH_TOKEN_ENV,
        read_token,
        "the server's own bearer token (16+ characters) that MCP requests must send, else 401 (see the README's "
        "[Security](#security) section). Never the Dessert API key; not with `--auth`.",
        None,
        applies=HTTP_ONLY,
    )
    # None: one account, the operator's.
    auth: AuthMode | None = setting(
        None,
        get_args(AuthMode),
        "http only: each caller uses their own Dessert account, sent as a bearer key (dessert-key) or linked by "
        "signing in through OAuth (oauth, for claude.ai and ChatGPT connectors); see docs/remote.md",
        None,
        option="--auth",
    )
    # --auth oauth: the public URL, the encryption keys and the database (see `oauth_config`).
    oauth: OAuthConfig | None = field(default=None, repr=False)
    metrics_token: Secret | None = setting(
        METRICS_TOKEN_ENV,
        read_token,
        "the bearer token (16+ characters) a Prometheus scraper sends for `/metrics`; without it `/metrics` "
        "answers 403 in that mode. See [docs/observability.md](docs/observability.md).",
        None,
        applies=WITH_AUTH,
    )

    redis_url: Secret | None = setting(
        REDIS_URL_ENV,
        read_redis_url,
        "several replicas (or `--workers`) behind one load balancer: a Redis or Valkey (`redis://…`, `rediss://…`) "
        "through which each replica's events reach the listeners on every other, so a client hears an alert "
        "whichever replica it is connected to. Needs the `redis` extra; see [Several replicas: "
        "Redis](#several-replicas-redis).",
        None,
        applies=HTTP_ONLY,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> HTTPOptions:
        return cls(**from_environ(cls, environ, overrides))

    @property
    def secrets(self) -> tuple[Secret | None, ...]:
        """What the logs must hide besides the Dessert key: the server's tokens and the Redis password."""
        return self.auth_token, self.metrics_token, redis_password(self.redis_url)

    @property
    def public_url(self) -> str | None:
        return self.oauth.public_url if self.oauth is not None else None

    def check(self, settings: Settings | None = None) -> HTTPOptions:
        """Refuse combinations that would be unsafe or broken, with a message that says what to do."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535; got {self.port}.")
        if self.workers < 1:
            raise ConfigError(f"--workers must be 1 or more; got {self.workers}.")
        if self.stateful and self.transport != "http":
            raise ConfigError("--stateful applies to --transport http only (SSE always keeps a session).")
        if self.workers > 1 and (self.transport != "http" or self.stateful):
            raise ConfigError(
                "--workers above 1 needs --transport http without --stateful: sessions (and SSE streams) live in "
                "one process, so a client's next request could reach a worker that does not know it."
            )
        for host in self.allowed_hosts:
            parse_host(host)
        for origin in self.allowed_origins:
            parse_origin(origin)
        for proxy in self.trusted_proxies:
            parse_proxy(proxy)
        if self.redis_url is not None and importlib.util.find_spec("redis") is None:
            raise ConfigError(
                f"{REDIS_URL_ENV} needs the redis extra (redis is not installed): pip install 'dessert-mcp[redis]'"
            )
        if self.auth is not None:
            self.check_auth(settings)
        elif self.metrics_token is not None:
            raise ConfigError(
                f"{METRICS_TOKEN_ENV} applies to --auth only; without --auth /metrics is behind {AUTH_TOKEN_ENV}."
            )
        if self.auth == "oauth" and self.oauth is None:
            raise ConfigError("--auth oauth needs --public-url (or DESSERT_MCP_PUBLIC_URL): the origin users add.")
        if self.auth != "oauth" and self.oauth is not None:
            raise ConfigError("--public-url applies to --auth oauth only.")
        # With --auth oauth the public URL names the host and origin clients use: an allow-list of one.
        public = self.public_url is not None
        if not is_loopback(self.host) and not public and not (self.allowed_hosts and self.allowed_origins):
            raise ConfigError(
                f"refusing to listen on {self.host}, which is reachable from other machines, without an explicit "
                "allow-list: pass --allowed-host with the host name(s) clients use to reach this server and "
                "--allowed-origin with the browser origin(s) allowed to call it (e.g. the server's own public "
                "origin), so DNS-rebinding and cross-site requests are refused. Set DESSERT_MCP_AUTH_TOKEN too."
            )
        key = settings.api_key if settings is not None else None
        if self.auth_token is not None and key is not None and same_secret(self.auth_token, key):
            raise ConfigError(
                f"{AUTH_TOKEN_ENV} must not be the Dessert API key: MCP clients would then hold the key. "
                f"Generate a separate token (e.g. {_TOKEN_HINT})."
            )
        return self

    def check_auth(self, settings: Settings | None) -> None:
        """What --auth refuses, whatever the auth settings: other transports, a server token, the operator's key."""
        if self.transport != "http":
            raise ConfigError(
                "--auth applies to --transport http only: OAuth clients and key-sending agents use streamable HTTP."
            )
        if self.auth_token is not None:
            raise ConfigError(
                f"{AUTH_TOKEN_ENV} is set, but with --auth the bearer token is each caller's own credential; "
                f"unset {AUTH_TOKEN_ENV}."
            )
        if settings is not None and (settings.api_key is not None or settings.api_key_problem is not None):
            raise ConfigError(OPERATOR_KEY_REFUSED)


def require_remote_extra(what: str = "--auth oauth") -> None:
    """The token store needs the `remote` extra: refuse at once, in one line, when its libraries are missing."""
    missing = [name for name in REMOTE_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{what} needs the remote extra ({', '.join(missing)} not installed): pip install 'dessert-mcp[remote]'"
        )


def oauth_config(environ: Mapping[str, str], *, public_url: str | None = None) -> OAuthConfig:
    """--auth oauth's settings: --public-url (or DESSERT_MCP_PUBLIC_URL) and the DESSERT_MCP_* auth variables."""
    require_remote_extra()
    from dessert_mcp.auth.config import OAuthConfig

    return OAuthConfig.from_env(environ, public_url=public_url)


def same_secret(a: Secret, b: Secret) -> bool:
    """Constant-time equality, so the answer takes the same time whatever the guess."""
    return hmac.compare_digest(a.get().encode(), b.get().encode())


def parse_host(value: str) -> tuple[str, str | None]:
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
        raise ConfigError(f"--allowed-host must look like example.com or example.com:8443; got {value!r}.")
    return name, port


def parse_proxy(value: str) -> str:
    """An address or a network (CIDR) of a proxy to trust."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ConfigError(
            f"--trusted-proxy ({TRUSTED_PROXIES_ENV}) takes addresses or networks like 10.0.0.5 or 10.0.0.0/24; "
            f"got {value!r}."
        ) from None


def parse_origin(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    bad = parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/")
    if bad or parts.query or parts.fragment or "@" in parts.netloc or "*" in parts.netloc:
        raise ConfigError(f"--allowed-origin must look like https://app.example.com[:port]; got {value!r}.")
    return f"{parts.scheme}://{parts.netloc}"
