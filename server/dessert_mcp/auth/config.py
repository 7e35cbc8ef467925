"""Settings of the remote connector's auth wing, from `DESSERT_MCP_*` variables (and the CLI)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

from dessert_mcp.config import ConfigError, Secret, env_value

AuthMode = Literal["dessert-key", "oauth"]
SCOPE: Final = "dessert:read"
MCP_PATH: Final = "/mcp"
DEFAULT_ACCESS_TOKEN_TTL_S: Final = 900
DEFAULT_REFRESH_TOKEN_TTL_S: Final = 30 * 24 * 3600
DEFAULT_CODE_TTL_S: Final = 300
DEFAULT_SIGN_IN_TTL_S: Final = 900
# How long a process trusts an access token it checked without asking the database again (auth/tokencache.py):
# a revocation through another replica is honoured within this many seconds; through this one, at once.
DEFAULT_TOKEN_CACHE_S: Final = 2.0
MAX_TOKEN_CACHE_S: Final = 30.0


def encryption_key_bytes(value: str, name: str) -> bytes:
    """The 32 bytes a DESSERT_MCP_ENCRYPTION_KEY* value holds; a `ConfigError` naming the fix otherwise."""
    try:
        raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{name} must be 32 random bytes in base64url; make one with `dessert-mcp accounts new-key`.")
    return raw


def _loopback(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1", "[::1]") or host.startswith("127.")


def public_url(value: str) -> str:
    """The connector's public origin: https, or http on loopback for local tests. No path, query or fragment."""
    parts = urlsplit(value.strip())
    hint = "--public-url (DESSERT_MCP_PUBLIC_URL) must look like https://mcp.example.com"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{hint}; got {value!r}.")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError(f"{hint}: OAuth needs https outside loopback (terminate TLS at your proxy).")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{hint}: the origin only, without a path, query, fragment or credentials.")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """What `--auth oauth` needs. Build it with `OAuthConfig.from_env`."""

    public_url: str
    encryption_key: Secret
    encryption_key_old: Secret | None = None
    database_url: str | None = None  # None: the SQLite default (store.default_database_url)
    dessert_base_url: str = "https://api.dessert.dev"
    access_token_ttl_s: int = DEFAULT_ACCESS_TOKEN_TTL_S
    refresh_token_ttl_s: int = DEFAULT_REFRESH_TOKEN_TTL_S
    code_ttl_s: int = DEFAULT_CODE_TTL_S
    sign_in_ttl_s: int = DEFAULT_SIGN_IN_TTL_S
    token_cache_s: float = DEFAULT_TOKEN_CACHE_S
    # Sign-in form: this many failed key checks per sign-in, and per client address (an IPv6 /64), per window;
    # then 429. The address allows more, so that people behind one shared address do not lock each other out.
    sign_in_attempts: int = 10
    sign_in_attempts_per_address: int = 50
    sign_in_window_s: int = 600
    # /authorize: this many per client address per window (each may fetch a client metadata document), then 429.
    authorizations: int = 60
    authorization_window_s: int = 600
    # /token: this many failed requests per client address, per client (its client_id) and per account (the one the
    # code or refresh token belongs to) per window, then 429. A client is held before its address, so one failing
    # client neither locks out the others behind a shared address nor, alone, the account's other clients.
    token_failures: int = 60
    token_failures_per_client: int = 10
    token_failures_per_account: int = 20
    token_window_s: int = 300
    # /register: this many registrations per client address per window, then 429.
    registrations: int = 20
    registration_window_s: int = 3600
    # Client ID Metadata Documents.
    cimd_enabled: bool = True
    cimd_max_bytes: int = 16 * 1024
    cimd_timeout_s: float = 5.0
    cimd_cache_s: int = 3600
    # Test mode only: let CIMD URLs resolve to loopback (never private or link-local), and trust this CA file.
    cimd_allow_loopback: bool = False
    cimd_ca_file: str | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def resource(self) -> str:
        return self.public_url + MCP_PATH

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> OAuthConfig:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env_value(env, name)

        url = overrides.pop("public_url", None) or get("DESSERT_MCP_PUBLIC_URL")
        if not url:
            raise ConfigError(
                "--auth oauth needs --public-url (or DESSERT_MCP_PUBLIC_URL): the https origin users add."
            )
        key = get("DESSERT_MCP_ENCRYPTION_KEY")
        if not key:
            raise ConfigError(
                "--auth oauth needs DESSERT_MCP_ENCRYPTION_KEY (32 random bytes, base64url) to encrypt linked keys; "
                "make one with `dessert-mcp accounts new-key` (or any 32 bytes from a CSPRNG)."
            )
        old = get("DESSERT_MCP_ENCRYPTION_KEY_OLD")
        # Checked here, so a malformed key stops start-up with one line rather than in a worker building the app.
        encryption_key_bytes(key, "DESSERT_MCP_ENCRYPTION_KEY")
        if old:
            encryption_key_bytes(old, "DESSERT_MCP_ENCRYPTION_KEY_OLD")
        ttl = get("DESSERT_MCP_ACCESS_TOKEN_TTL_S")
        values: dict[str, object] = {
            "public_url": public_url(str(url)),
            "encryption_key": Secret(key),
            "encryption_key_old": Secret(old) if old else None,
            "database_url": get("DESSERT_MCP_DATABASE_URL"),
            "dessert_base_url": get("DESSERT_API_BASE_URL") or "https://api.dessert.dev",
        }
        if ttl is not None:
            try:
                seconds = int(ttl)
            except ValueError:
                seconds = 0
            if not 60 <= seconds <= 86400:
                raise ConfigError("DESSERT_MCP_ACCESS_TOKEN_TTL_S must be a whole number of seconds from 60 to 86400.")
            values["access_token_ttl_s"] = seconds
        cache = get("DESSERT_MCP_TOKEN_CACHE_S")
        if cache is not None:
            try:
                cache_s = float(cache)
            except ValueError:
                cache_s = -1.0
            if not 0 <= cache_s <= MAX_TOKEN_CACHE_S:
                raise ConfigError(
                    f"DESSERT_MCP_TOKEN_CACHE_S must be 0 (check every request against the database) to "
                    f"{MAX_TOKEN_CACHE_S:g} seconds; got {cache!r}."
                )
            values["token_cache_s"] = cache_s
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


OPERATOR_KEY_REFUSED: Final = (
    "DESSERT_API_KEY is set, but with --auth each caller uses their own Dessert key; a caller without one "
    "must get 401, never the operator's account. Unset DESSERT_API_KEY for this server."
)


def refuse_operator_key(environ: Mapping[str, str] | None = None) -> None:
    """In either remote mode the operator's DESSERT_API_KEY must not be set: callers bring their own."""
    env = os.environ if environ is None else environ
    if (env.get("DESSERT_API_KEY") or "").strip():
        raise ConfigError(OPERATOR_KEY_REFUSED)
