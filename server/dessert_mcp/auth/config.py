"""Settings of the remote connector's auth wing, from `DESSERT_MCP_*` variables (and the CLI)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

from dessert_mcp.config import (
    DEFAULT_BASE_URL,
    WITH_OAUTH,
    ConfigError,
    Secret,
    Settings,
    declared,
    from_environ,
    number,
    setting,
)

AuthMode = Literal["dessert-key", "oauth"]
SCOPE: Final = "dessert:read"
MCP_PATH: Final = "/mcp"
DEFAULT_ACCESS_TOKEN_TTL_S: Final = 900
DEFAULT_REFRESH_TOKEN_TTL_S: Final = 30 * 24 * 3600
DEFAULT_CODE_TTL_S: Final = 300
DEFAULT_SIGN_IN_TTL_S: Final = 900
DEFAULT_TOKEN_CACHE_S: Final = 2.0


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


def _encryption_key(value: str, name: str) -> Secret:
    # Checked here, so a malformed key stops start-up with one line rather than in a worker building the app.
    encryption_key_bytes(value, name)
    return Secret(value)


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """What `--auth oauth` needs. Build it with `OAuthConfig.from_env`."""

    public_url: str = setting(
        "DESSERT_MCP_PUBLIC_URL",
        lambda value, name: public_url(value),
        "the https origin people add as a connector. See [docs/remote.md](docs/remote.md).",
        applies=WITH_OAUTH,
        option="--public-url",
        metavar="URL",
    )
    encryption_key: Secret = setting(
        "DESSERT_MCP_ENCRYPTION_KEY",
        _encryption_key,
        "encrypts the linked Dessert keys at rest (32 random bytes, base64url; `dessert-mcp accounts new-key` makes "
        "one).",
        applies=WITH_OAUTH,
    )
    encryption_key_old: Secret | None = setting(
        "DESSERT_MCP_ENCRYPTION_KEY_OLD",
        _encryption_key,
        "while rotating, the previous encryption key, still accepted for decrypting (see `dessert-mcp accounts "
        "--help`).",
        None,
        applies=WITH_OAUTH,
    )
    database_url: str | None = setting(
        "DESSERT_MCP_DATABASE_URL",
        None,
        "where tokens and linked accounts live, and the ledger `dessert-mcp ledger` reads; `sqlite:///path` or "
        "`postgresql://user@host/db` (for several replicas). The default directory is found by `platformdirs` (a "
        "dependency of the `remote` extra) as each platform expects; it and the file are created owner-only.",
        None,  # the SQLite default (store.default_database_url)
        applies=WITH_OAUTH,
        shown="a SQLite file in $XDG_STATE_HOME/dessert-mcp/",
    )
    dessert_base_url: str = DEFAULT_BASE_URL  # from DESSERT_API_BASE_URL, the core's setting
    access_token_ttl_s: int = setting(
        "DESSERT_MCP_ACCESS_TOKEN_TTL_S",
        number(60, 86400, whole=True),
        "access-token lifetime in seconds (60-86400).",
        DEFAULT_ACCESS_TOKEN_TTL_S,
        applies=WITH_OAUTH,
    )
    refresh_token_ttl_s: int = DEFAULT_REFRESH_TOKEN_TTL_S
    code_ttl_s: int = DEFAULT_CODE_TTL_S
    sign_in_ttl_s: int = DEFAULT_SIGN_IN_TTL_S
    # How long a process trusts an access token it checked without asking the database again (auth/tokencache.py):
    # a revocation through another replica is honoured within this many seconds; through this one, at once.
    token_cache_s: float = setting(
        "DESSERT_MCP_TOKEN_CACHE_S",
        number(0, 30),
        "seconds a process trusts a token it checked (0, check every request against the database, to 30): the "
        "bound on how late a revocation reaches other replicas.",
        DEFAULT_TOKEN_CACHE_S,
        applies=WITH_OAUTH,
    )
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
        values = from_environ(cls, environ, overrides)
        if values["public_url"] is None:
            raise ConfigError(
                "--auth oauth needs --public-url (or DESSERT_MCP_PUBLIC_URL): the https origin users add."
            )
        if values["encryption_key"] is None:
            raise ConfigError(
                "--auth oauth needs DESSERT_MCP_ENCRYPTION_KEY (32 random bytes, base64url) to encrypt linked keys; "
                "make one with `dessert-mcp accounts new-key` (or any 32 bytes from a CSPRNG)."
            )
        base_url = declared(Settings)["base_url"].value(os.environ if environ is None else environ)
        return cls(**values | {"dessert_base_url": base_url})


OPERATOR_KEY_REFUSED: Final = (
    "DESSERT_API_KEY is set, but with --auth each caller uses their own Dessert key; a caller without one "
    "must get 401, never the operator's account. Unset DESSERT_API_KEY for this server."
)


def refuse_operator_key(environ: Mapping[str, str] | None = None) -> None:
    """In either remote mode the operator's DESSERT_API_KEY must not be set: callers bring their own."""
    env = os.environ if environ is None else environ
    if (env.get("DESSERT_API_KEY") or "").strip():
        raise ConfigError(OPERATOR_KEY_REFUSED)
