"""Settings from `DESSERT_*` environment variables (and the CLI), validated once at start-up.

Each setting is declared once, as a field of the dataclass that holds it, with `setting(...)`: its variable, how a
value is read, its default, its help, where it applies, and its command-line option if it has one. `Settings` holds
the core's; the HTTP wing's `HTTPOptions` and the auth wing's `OAuthConfig` hold theirs, in their own modules, and so
does any wing that adds settings. `from_environ` reads a class's declared fields; the CLI builds its options and its
`--help` from them, and the README's Configuration table is generated from them (tests/test_readme.py checks it).

To add a setting: add a field declared with `setting(...)` to the class of the wing it configures (a new wing's
class goes into `dessert_mcp.cli.settings_classes`, in the order `--help` should list it); read it with
`from_environ` (the class's `from_env` does); run the README test with DESSERT_UPDATE_SNAPSHOTS=1 to regenerate the
table.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

ToolNameStyle = Literal["auto", "dotted", "underscore"]
TOOL_NAME_STYLES: Final[tuple[ToolNameStyle, ...]] = get_args(ToolNameStyle)
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_BASE_URL: Final = "https://api.dessert.dev"
DEFAULT_TIMEOUT_S: Final = 25.0
DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_BACKOFF_S: Final = 0.5
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_ACCOUNT_CONCURRENCY: Final = 4
# The ledger's poller (ledger/poller.py): the bounds of its interval per account.
DEFAULT_LEDGER_POLL_MIN_S: Final = 10.0
MAX_LEDGER_RETENTION_DAYS: Final = 36500
DEFAULT_LEDGER_POLL_MAX_S: Final = 300.0

# Where a setting applies, as --help and the README say it (the packaging test reads the "HTTP transports only").
HTTP_ONLY: Final = "HTTP transports only"
WITH_AUTH: Final = "HTTP transports only, with `--auth`"
WITH_OAUTH: Final = "HTTP transports only, with `--auth oauth`"

# Hosts substitute `${user_config.api_key}` (or similar) verbatim when the user left a setting empty.
_PLACEHOLDER = re.compile(r"^\$\{[^}]*\}$")
# Printable ASCII without spaces: anything else cannot travel in an HTTP header unmangled.
PRINTABLE_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")


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


# (the text, the variable or option it came from) -> the value, or a ConfigError; a tuple: one of these choices.
Reader = Callable[[str, str], Any] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as its users see it; `setting(...)` declares it on a field, `declared(cls)` lists a class's."""

    env: str | None  # the DESSERT_* variable; None for a command-line option only
    read: Reader | None  # how its text becomes its value (None: as it is)
    help: str  # Markdown for the README; --help shows it without the links
    applies: str = ""  # HTTP_ONLY, WITH_AUTH or WITH_OAUTH; "" for everywhere
    option: str | None = None  # the command-line option that wins over the variable
    metavar: str | None = None
    shown: str | None = None  # the default in words, when the value itself says nothing (None, a path)
    name: str = ""  # the field's name and its default, filled in by `declared`
    default: Any = None

    def value(self, environ: Mapping[str, str]) -> Any:
        text = env_value(environ, self.env) if self.env else None
        return self.default if text is None else self.parse(text, self.env or "")

    def parse(self, text: str, source: str) -> Any:
        if isinstance(self.read, tuple):
            if (choice := spelled(self.read, text)) in self.read:
                return choice
            raise ConfigError(f"{source} must be one of {', '.join(self.read)}; got {text!r}.")
        return text if self.read is None else self.read(text, source)

    def default_text(self) -> str | None:
        """The default as --help and the README show it; None when there is nothing to show."""
        if self.shown is not None or self.default is None or self.default is False:
            return self.shown
        if isinstance(self.default, tuple):
            return ", ".join(self.default) or None
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def describe(self, *, markdown: bool = False) -> str:
        text = (f"{self.applies}: " if self.applies else "") + self.help
        return text if markdown else _LINK.sub(r"\1", text)


def setting(env: str | None, read: Reader | None, help: str, default: Any = MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is a setting (see the module's docstring); `kwargs` are `Setting`'s."""
    return field(default=default, metadata={"setting": Setting(env, read, help, **kwargs)})


def declared(cls: type) -> dict[str, Setting]:
    """`cls`'s settings by field name, in declaration order."""
    return {
        f.name: replace(f.metadata["setting"], name=f.name, default=None if f.default is MISSING else f.default)
        for f in fields(cls)
        if "setting" in f.metadata
    }


def from_environ(cls: type, environ: Mapping[str, str] | None, overrides: Mapping[str, object]) -> dict[str, Any]:
    """The values of `cls`'s settings from `environ` (default: the process environment), read in declaration order.

    `overrides` (command-line options) win when not None; text ones are read as the variable's would be.
    """
    env = os.environ if environ is None else environ
    values = {k: v for k, v in overrides.items() if v is not None}
    for name, s in declared(cls).items():
        given = values.get(name)
        if not isinstance(given, str):
            values[name] = s.value(env) if given is None else given
        else:
            values[name] = s.parse(given, s.option or name)
    return values


def spelled(choices: tuple[str, ...], value: str) -> str:
    """The choice `value` names in any case (each choice is all one case), else `value`."""
    return next((c for c in choices if c in (value.lower(), value.upper())), value)


def on_off(value: str, name: str) -> bool:
    """`on` or `off`, in any case."""
    return bool(Setting(None, ("on", "off"), "").parse(value, name) == "on")


def number(
    low: float, high: float = math.inf, *, whole: bool = False, positive: bool = False, unit: str = "seconds"
) -> Reader:
    """A number (of `unit`, unless `whole`) from `low` to `high`, and above zero when `positive`."""
    kind = "a whole number" if whole else f"a number of {unit}"
    bounds = f"from {low:g} to {high:g}" if high < math.inf else "above 0" if positive else f"of {low:g} or more"

    def read(value: str, name: str) -> float:
        try:
            n = int(value) if whole else float(value)
        except ValueError:
            n = math.nan
        if not (math.isfinite(n) and low <= n <= high) or (positive and n == 0):
            raise ConfigError(f"{name} must be {kind} {bounds}; got {value!r}.")
        return n

    return read


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to run; build it with `Settings.from_env`."""

    # A missing or unusable key is not a start-up error: the server starts and says why on each call.
    api_key: Secret | None = setting(
        "DESSERT_API_KEY",
        lambda value, name: read_key(value)[0],
        "Dessert API key, sent as `Authorization: Bearer …` to the configured origin only; read only from the "
        "environment, never from the command line. Without it the server still starts and lists its tools (hosts "
        "list tools first); each call then returns a `not_configured` error naming this variable, and a warning "
        "goes to stderr at start.",
        None,
    )
    api_key_problem: str | None = None
    base_url: str = setting(
        "DESSERT_API_BASE_URL",
        lambda value, name: _base_url(value),
        "API origin. Plain `http` is accepted only for loopback hosts (the sandbox); credentials, query strings "
        "and fragments are refused.",
        DEFAULT_BASE_URL,
    )
    tool_names: ToolNameStyle = setting(
        "DESSERT_MCP_TOOL_NAMES",
        TOOL_NAME_STYLES,
        "Tool name spelling in tools/list: `auto` (underscore names, for every client), `dotted` or `underscore`.",
        "auto",
        option="--tool-names",
    )
    timeout_s: float = setting(
        "DESSERT_TIMEOUT_S",
        number(0, positive=True),
        "Deadline in seconds for one tool call: every attempt, wait and body byte included.",
        DEFAULT_TIMEOUT_S,
    )
    max_attempts: int = setting(
        "DESSERT_MAX_ATTEMPTS",
        number(1, 10, whole=True),
        "Attempts per call on connection errors, 408, 409, 429 and 5xx (1-10). See "
        "[docs/reliability.md](docs/reliability.md).",
        DEFAULT_MAX_ATTEMPTS,
    )
    backoff_s: float = setting(
        "DESSERT_BACKOFF_S",
        number(0),
        "First retry wait in seconds, doubled per attempt, with jitter; the API's `Retry-After` wins when it fits "
        "the deadline.",
        DEFAULT_BACKOFF_S,
    )
    max_body_bytes: int = setting(
        "DESSERT_MAX_BODY_BYTES",
        number(1024, 64 * 1024 * 1024, whole=True),
        "Largest API answer read, counted after decompression.",
        DEFAULT_MAX_BODY_BYTES,
    )
    log_level: LogLevel = setting(
        "DESSERT_MCP_LOG_LEVEL",
        get_args(LogLevel),
        "Log level: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`. Logs go to stderr only, with the key redacted.",
        "INFO",
        option="--log-level",
    )
    log_format: LogFormat = setting(
        "DESSERT_MCP_LOG_FORMAT",
        get_args(LogFormat),
        "`text`, or `json`: one JSON object per line, for log collectors. See "
        "[docs/observability.md](docs/observability.md).",
        "text",
    )
    # Off by default: every call reads the live balance. An hour is the longest "recent" a balance can honestly be.
    cache_ttl_s: float = setting(
        "DESSERT_CACHE_TTL_S",
        number(0, 3600),
        "Seconds a successful answer is reused for the same key (0 = off, every call asks Dessert; up to 3600); a "
        "balance can then be up to that old.",
        0.0,
    )
    ledger: bool = setting(
        "DESSERT_LEDGER",
        on_off,
        "`on`: keep every usage and balance answer the server sees, so `dessert.get_usage` answers ranges beyond the "
        "API's last 50 transactions and `dessert.get_spend` totals them (see [History](#history)); `off`: keep "
        "nothing, and the tools are the two of before.",
        True,
        shown="on",
    )
    ledger_poll: bool = setting(
        "DESSERT_LEDGER_POLL",
        on_off,
        "With the ledger on: read each account's usage (and balance) in the background, often enough that no "
        "transaction scrolls out of the API's last 50 unseen (`on`), or not (`off`). See "
        "[docs/ledger-polling.md](docs/ledger-polling.md).",
        True,
        shown="on",
    )
    ledger_poll_min_s: float = setting(
        "DESSERT_LEDGER_POLL_MIN_S",
        number(0, positive=True),
        "The shortest poll interval per account, in seconds: an account doing more than 20 transactions per this "
        "many seconds outruns the poller (the ledger records the gap).",
        DEFAULT_LEDGER_POLL_MIN_S,
    )
    ledger_poll_max_s: float = setting(
        "DESSERT_LEDGER_POLL_MAX_S",
        number(0, positive=True),
        "The longest poll interval per account, in seconds (an idle account's); at least DESSERT_LEDGER_POLL_MIN_S.",
        DEFAULT_LEDGER_POLL_MAX_S,
    )
    ledger_poll_recent_s: float = setting(
        "DESSERT_LEDGER_POLL_RECENT_S",
        number(0, positive=True),
        "the ledger's poller reads only the accounts used through this server within this many seconds.",
        24 * 3600.0,
        applies=WITH_AUTH,
    )
    ledger_retention_days: int = setting(
        "DESSERT_LEDGER_RETENTION_DAYS",
        number(0, MAX_LEDGER_RETENTION_DAYS, whole=True),
        "Days of usage history the ledger keeps (0: all of it). A running server deletes older rows and balance "
        "snapshots once an hour; replicas sharing a database take turns. `dessert-mcp ledger forget` deletes one "
        "account's history at once.",
        0,
    )
    alert_balance_below: int = setting(
        "DESSERT_ALERT_BALANCE_BELOW",
        number(0, whole=True),
        "With the ledger on: raise an alert when the balance falls below this many credits (0 = off); see "
        "[Alerts](#alerts).",
        0,
    )
    alert_runway_days: float = setting(
        "DESSERT_ALERT_RUNWAY_DAYS",
        number(0, unit="days"),
        "With the ledger on: raise an alert when the forecast says the balance runs out within this many days "
        "(0 = off).",
        3.0,
    )
    alert_spike_factor: float = setting(
        "DESSERT_ALERT_SPIKE_FACTOR",
        number(0, unit="times"),
        "With the ledger on: raise an alert when a day's net spend is above this many times the median of the "
        "7 whole days before it (0 = off).",
        3.0,
    )
    alert_webhook_urls: tuple[Secret, ...] = setting(
        "DESSERT_ALERT_WEBHOOK_URL",
        lambda value, name: tuple(Secret(url) for url in re.split(r"[\s,]+", value) if url),
        "With the ledger on: POST each alert, when it fires and when it clears, to this URL (several: separated by "
        "spaces or commas), signed with DESSERT_ALERT_WEBHOOK_SECRET; Slack and Discord incoming-webhook URLs work "
        "as they are. Kept secret (such URLs carry their token): logs name a webhook by its number and host. https, "
        "to public addresses only, unless DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS names the host. See "
        "[Webhooks](#webhooks).",
        (),
    )
    alert_webhook_secret: Secret | None = setting(
        "DESSERT_ALERT_WEBHOOK_SECRET",
        lambda value, name: _webhook_secret(value, name),
        "The key alert webhooks are signed with, after the Standard Webhooks convention: `whsec_` and 24-64 random "
        "bytes in base64 (`echo whsec_$(openssl rand -base64 32)`). Unset: webhooks go unsigned.",
        None,
    )
    alert_webhook_allow_hosts: tuple[str, ...] = setting(
        "DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS",
        lambda value, name: tuple(h.strip("[]").rstrip(".").lower() for h in re.split(r"[\s,]+", value) if h),
        "Hosts (comma-separated) alert webhooks may reach although they resolve to private, loopback or link-local "
        "addresses, over https or plain http (a receiver on this machine or the local network).",
        (),
    )
    account_concurrency: int = setting(
        "DESSERT_MCP_ACCOUNT_CONCURRENCY",
        number(1, 64, whole=True),
        "Dessert calls one account may have in flight at once (1-64); more wait their turn, so no caller spends "
        "the others' rate.",
        DEFAULT_ACCOUNT_CONCURRENCY,
        applies=WITH_AUTH,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read `DESSERT_*` variables from `environ` (default: the process environment).

        `overrides` (CLI options, already checked by argparse) win over the environment. Raises `ConfigError` for
        values that cannot work; a missing or malformed API key is not an error here (see `api_key_problem`).
        """
        env = os.environ if environ is None else environ
        problem = read_key(env_value(env, "DESSERT_API_KEY"))[1]
        settings = cls(**{"api_key_problem": problem} | from_environ(cls, env, overrides))
        if settings.ledger_poll_max_s < settings.ledger_poll_min_s:
            raise ConfigError(
                f"DESSERT_LEDGER_POLL_MAX_S ({settings.ledger_poll_max_s:g}) must be at least "
                f"DESSERT_LEDGER_POLL_MIN_S ({settings.ledger_poll_min_s:g}) seconds."
            )
        for number_, url in enumerate(settings.alert_webhook_urls, start=1):
            _webhook_url(number_, url.get(), settings.alert_webhook_allow_hosts)
        return settings

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


def _webhook_secret(value: str, name: str) -> Secret:
    from dessert_mcp.alerts.webhooks.message import secret_key  # the webhooks wing: only when a secret is set

    try:
        secret_key(value)
    except ValueError as exc:
        raise ConfigError(f"{name} {exc}.") from None
    return Secret(value)


# A webhook URL's length at most: Slack's and Discord's are about 80-130 characters.
MAX_WEBHOOK_URL_CHARS: Final = 2048


def _webhook_url(number_: int, url: str, allowed_hosts: tuple[str, ...]) -> None:
    """Refuse a webhook URL that cannot be used; the message names it by its number, never by its text (a secret)."""
    parts = urlsplit(url)
    which = f"DESSERT_ALERT_WEBHOOK_URL's URL number {number_}"
    try:
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host or len(url) > MAX_WEBHOOK_URL_CHARS:
        raise ConfigError(f"{which} must look like https://hooks.example.com/path (at most 2048 characters).")
    if parts.username or parts.password or parts.fragment:
        raise ConfigError(f"{which} must not carry credentials (user:password@) or a #fragment.")
    if parts.scheme == "http" and host.rstrip(".").lower() not in allowed_hosts:
        raise ConfigError(
            f"{which} must be https; plain http only for a host named in DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS."
        )


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (IPv6 with or without brackets)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
