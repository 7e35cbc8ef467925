"""Settings from `DESSERT_*` environment variables (and the CLI), validated once at start-up."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

ToolNameStyle = Literal["auto", "dotted", "underscore"]
TOOL_NAME_STYLES: Final[tuple[ToolNameStyle, ...]] = get_args(ToolNameStyle)
LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)

DEFAULT_BASE_URL: Final = "https://api.dessert.dev"
DEFAULT_TIMEOUT_S: Final = 25.0
DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_BACKOFF_S: Final = 0.5
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
# Off by default: every call reads the live balance. An hour is the longest "recent" a balance can honestly be.
DEFAULT_CACHE_TTL_S: Final = 0.0
MAX_CACHE_TTL_S: Final = 3600.0
# With --auth, upstream calls one account may have in flight at once; more wait their turn.
DEFAULT_ACCOUNT_CONCURRENCY: Final = 4
# The ledger's poller (ledger/poller.py): the bounds of its interval per account, and, in the remote modes, how
# recently an account must have been used through this server to be polled.
DEFAULT_LEDGER_POLL_MIN_S: Final = 10.0
DEFAULT_LEDGER_POLL_MAX_S: Final = 300.0
DEFAULT_LEDGER_POLL_RECENT_S: Final = 24 * 3600.0

# Hosts substitute `${user_config.api_key}` (or similar) verbatim when the user left a setting empty.
_PLACEHOLDER = re.compile(r"^\$\{[^}]*\}$")
# Printable ASCII without spaces: anything else cannot travel in an HTTP header unmangled.
PRINTABLE_TOKEN = re.compile(r"^[\x21-\x7e]+$")


class ConfigError(ValueError):
    """A setting has a value the server cannot run with; the message names the variable and the fix."""


def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """Why a server could not bind (host, port), as one line naming the option that changes it."""
    reason = "it is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
    return ConfigError(f"cannot listen on {host}:{port}: {reason}; pick another with --port.")


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows itself in `repr`, `str` or tracebacks."""

    _value: str = field(repr=False)

    def get(self) -> str:
        return self._value

    def masked(self) -> str:
        """First and last four characters, enough to tell keys apart and useless to an attacker."""
        v = self._value
        return f"{v[:4]}…{v[-4:]}" if len(v) >= 16 else "*" * min(len(v), 8)

    def fingerprint(self) -> str:
        """A short hash that tells keys apart in logs; shorter than any fragment the redactor hides."""
        return fingerprint(hashlib.sha256(self._value.encode()).hexdigest())

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def fingerprint(sha256_hex: str) -> str:
    """`Secret.fingerprint` from the value's SHA-256 (hex), for a caller that has hashed it already."""
    return "sha256:" + sha256_hex[:6]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to run; build it with `Settings.from_env`."""

    api_key: Secret | None = None
    # Set when DESSERT_API_KEY is present but unusable; the server still starts and says why on each call.
    api_key_problem: str | None = None
    base_url: str = DEFAULT_BASE_URL
    tool_names: ToolNameStyle = "auto"
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_s: float = DEFAULT_BACKOFF_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    account_concurrency: int = DEFAULT_ACCOUNT_CONCURRENCY
    # The ledger's background reads (with the ledger on): whether, how often at least and at most, for whom.
    ledger_poll: bool = True
    ledger_poll_min_s: float = DEFAULT_LEDGER_POLL_MIN_S
    ledger_poll_max_s: float = DEFAULT_LEDGER_POLL_MAX_S
    ledger_poll_recent_s: float = DEFAULT_LEDGER_POLL_RECENT_S
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    # Seconds a successful answer is reused for the same account; 0 = every call asks Dessert.
    cache_ttl_s: float = DEFAULT_CACHE_TTL_S
    # Keep every usage and balance answer in the ledger (DESSERT_LEDGER=off: answers come from the API alone).
    ledger: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read `DESSERT_*` variables from `environ` (default: the process environment).

        `overrides` (CLI options, already checked by argparse) win over the environment. Raises `ConfigError` for
        values that cannot work; a missing or malformed API key is not an error here (see `api_key_problem`).
        """
        env = os.environ if environ is None else environ
        key, problem = read_key(env_value(env, "DESSERT_API_KEY"))
        poll_min_s, poll_max_s = _poll_bounds(env)
        settings = cls(
            api_key=key,
            api_key_problem=problem,
            base_url=_base_url(env_value(env, "DESSERT_API_BASE_URL") or DEFAULT_BASE_URL),
            tool_names=_tool_names(env_value(env, "DESSERT_MCP_TOOL_NAMES") or "auto"),
            timeout_s=_positive_float(env, "DESSERT_TIMEOUT_S", DEFAULT_TIMEOUT_S),
            max_attempts=_bounded_int(env, "DESSERT_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, low=1, high=10),
            backoff_s=_positive_float(env, "DESSERT_BACKOFF_S", DEFAULT_BACKOFF_S, allow_zero=True),
            max_body_bytes=_bounded_int(
                env, "DESSERT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, low=1024, high=64 * 1024 * 1024
            ),
            account_concurrency=_bounded_int(
                env, "DESSERT_MCP_ACCOUNT_CONCURRENCY", DEFAULT_ACCOUNT_CONCURRENCY, low=1, high=64
            ),
            ledger_poll=_choice(env_value(env, "DESSERT_LEDGER_POLL") or "on", ("on", "off"), "DESSERT_LEDGER_POLL")
            == "on",
            ledger_poll_min_s=poll_min_s,
            ledger_poll_max_s=poll_max_s,
            ledger_poll_recent_s=_positive_float(env, "DESSERT_LEDGER_POLL_RECENT_S", DEFAULT_LEDGER_POLL_RECENT_S),
            log_level=_choice(env_value(env, "DESSERT_MCP_LOG_LEVEL") or "INFO", LOG_LEVELS, "DESSERT_MCP_LOG_LEVEL"),
            log_format=_choice(
                env_value(env, "DESSERT_MCP_LOG_FORMAT") or "text", LOG_FORMATS, "DESSERT_MCP_LOG_FORMAT"
            ),
            cache_ttl_s=_cache_ttl(env),
            ledger=_choice(env_value(env, "DESSERT_LEDGER") or "on", ("on", "off"), "DESSERT_LEDGER") == "on",
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    def missing_key_warning(self) -> str | None:
        """The start-up warning when calls cannot work for want of a key; None when a key is set."""
        if self.api_key is not None:
            return None
        return (
            "DESSERT_API_KEY is not set: the tools are listed, but every call will fail until it is set. "
            + (self.api_key_problem or "Get a key from your Dessert dashboard, or try --sandbox.")
        ).strip()

    def with_key(self, key: str) -> Settings:
        """A copy using `key` (the sandbox wiring uses this)."""
        secret, problem = read_key(key)
        return replace(self, api_key=secret, api_key_problem=problem)


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """`env[name]` without surrounding space; None when unset, empty or a host's unfilled placeholder."""
    value = env.get(name, "").strip()
    return None if not value or _PLACEHOLDER.match(value) else value


def read_key(value: str | None) -> tuple[Secret | None, str | None]:
    """A Dessert key as a Secret, or None with what is wrong with it (None, None when there is none)."""
    if value is None:
        return None, None
    if not PRINTABLE_TOKEN.match(value):
        return None, "DESSERT_API_KEY contains spaces or non-printable characters; paste the key again without them."
    return Secret(value), None


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    hint = f"DESSERT_API_BASE_URL must look like {DEFAULT_BASE_URL}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{hint}; got {value!r}.")
    if parts.username or parts.password:
        raise ConfigError(f"{hint}: credentials in the URL are not allowed (use DESSERT_API_KEY).")
    if parts.query or parts.fragment:
        raise ConfigError(f"{hint}: no query string or fragment; got {value!r}.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # The key travels in a header; plain http is only acceptable when it never leaves this machine.
        raise ConfigError(f"{hint}: plain http is only allowed for loopback hosts (such as the sandbox).")
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (IPv6 with or without brackets)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


ChoiceT = TypeVar("ChoiceT", bound=str)


def _choice(value: str, choices: tuple[ChoiceT, ...], source: str, expected: str = "") -> ChoiceT:
    """The choice `value` names in any case (each choice is all one case); else a ConfigError naming `source`."""
    for choice in choices:
        if choice in (value.lower(), value.upper()):
            return choice
    expected = expected or f"{', '.join(choices[:-1])} or {choices[-1]}"
    raise ConfigError(f"{source} must be {expected}; got {value!r}.")


def _tool_names(value: str) -> ToolNameStyle:
    return _choice(value, TOOL_NAME_STYLES, "DESSERT_MCP_TOOL_NAMES", "one of " + ", ".join(TOOL_NAME_STYLES))


def _positive_float(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    value = env_value(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds; got {value!r}.") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        kind = "zero or a positive" if allow_zero else "a positive"
        raise ConfigError(f"{name} must be {kind} number of seconds; got {value!r}.")
    return number


def _bounded_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    value = env_value(env, name)
    if value is None:
        return default
    with contextlib.suppress(ValueError):
        number = int(value)
        if low <= number <= high:
            return number
    raise ConfigError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")


def _poll_bounds(env: Mapping[str, str]) -> tuple[float, float]:
    low = _positive_float(env, "DESSERT_LEDGER_POLL_MIN_S", DEFAULT_LEDGER_POLL_MIN_S)
    high = _positive_float(env, "DESSERT_LEDGER_POLL_MAX_S", max(low, DEFAULT_LEDGER_POLL_MAX_S))
    if high < low:
        raise ConfigError(
            f"DESSERT_LEDGER_POLL_MAX_S ({high:g}) must be at least DESSERT_LEDGER_POLL_MIN_S ({low:g}) seconds."
        )
    return low, high


def _cache_ttl(env: Mapping[str, str]) -> float:
    ttl = _positive_float(env, "DESSERT_CACHE_TTL_S", DEFAULT_CACHE_TTL_S, allow_zero=True)
    if ttl > MAX_CACHE_TTL_S:
        value = env_value(env, "DESSERT_CACHE_TTL_S")
        raise ConfigError(f"DESSERT_CACHE_TTL_S must be 0 (off) to {MAX_CACHE_TTL_S:g} seconds; got {value!r}.")
    return ttl
