"""A small, strict async client for Dessert's balance and usage endpoints, and its one error type. No MCP in here."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Final, Literal, Self, TypeVar

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from dessert_mcp import __version__
from dessert_mcp.config import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT_S,
    Secret,
    Settings,
)
from dessert_mcp.models import BALANCE_PATH, REDACT, USAGE_PATH, Balance, Usage, clean_text
from dessert_mcp.redact import Redactor
from dessert_mcp.telemetry import NO_OBSERVER, Observer, UpstreamSpan

ErrorCode = Literal[
    "auth_invalid",
    "forbidden",
    "not_found",
    "rate_limited",
    "upstream_unavailable",
    "timeout",
    "bad_upstream_response",
    "invalid_argument",
    "not_configured",
]

USER_AGENT: Final = f"dessert-mcp/{__version__} (+https://github.com/dessert-dev/dessert-mcp)"
# What to check when Dessert rejects the key, by where the key came from (the operator's variable here).
KEY_HINT: Final = "Check DESSERT_API_KEY."
MISSING_KEY: Final = "DESSERT_API_KEY is not set. Add your Dessert API key to the server's environment and restart it."
_DETAIL_MAX: Final = 200
# Statuses worth another attempt for an idempotent GET; any other 4xx will not change by asking again.
RETRY_STATUSES: Final = frozenset({408, 409, 429}) | frozenset(range(500, 600))
# Backoff doubles per attempt up to this, with full jitter on the upper half.
_BACKOFF_MAX_S: Final = 8.0
# A Retry-After beyond a day is reported as a day: an agent has nothing to plan with a larger number.
RETRY_AFTER_MAX_S: Final = 86400.0
# What the body reader inflates (zlib window bits: gzip header, zlib header); anything else the API sends is
# refused by name, not misread as "not JSON".
_ZLIB_WBITS: Final = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_BOM: Final = b"\xef\xbb\xbf"

ModelT = TypeVar("ModelT", bound=BaseModel)


class DessertAPIError(Exception):
    """Any failure to get a usable answer from Dessert, with a sentence that says what to do."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def sanitize(text: str, limit: int = _DETAIL_MAX) -> str:
    """Upstream text made safe to echo: no control, zero-width or bidi characters, one line, capped."""
    cleaned = " ".join(clean_text(text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class DessertClient:
    """Dessert REST client; use as an async context manager so the connection pool is closed.

    Each call retries idempotent failures (connection errors, 408, 409, 429, 5xx) up to `max_attempts`
    times with jittered exponential backoff or the API's Retry-After, all under one `timeout_s` deadline
    on anyio's clock. `sleep` and `clock` (default: anyio's) and `rng` let tests check the waits without waiting.
    Everything the client returns or raises has the key redacted from upstream text, after decoding.
    Each attempt is an OpenTelemetry client span (a no-op unless tracing is set up) and an event for `observer`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: Secret | None,
        key_problem: str | None = None,
        key_hint: str = KEY_HINT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        transport: httpx2.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = anyio.current_time,
        rng: random.Random | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._use_key(api_key, key_problem, key_hint)
        self._observer = observer
        self._timeout_s = timeout_s
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._max_body_bytes = max_body_bytes
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        # Requests go straight to the transport (the connection pool): this client needs none of what
        # httpx2.AsyncClient adds per request (URL and header merging, cookies, auth flows, redirects, hooks).
        # Redirects are therefore never followed: the key must never travel to another origin.
        self._transport = transport  # None: made on first use, see _pool
        self._owns_transport = True
        # The deadline below bounds the whole call; these only stop one phase from eating all of it.
        self._extensions = {"timeout": httpx2.Timeout(timeout_s, connect=min(timeout_s, 5.0)).as_dict()}
        self._urls = {path: httpx2.URL(self.base_url + path) for path in (BALANCE_PATH, USAGE_PATH)}
        self._span_attributes = {path: _span_attributes(url, path) for path, url in self._urls.items()}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        observer: Observer = NO_OBSERVER,
        key_hint: str = KEY_HINT,
    ) -> Self:
        """The client the settings describe: origin, key, deadline, retry policy and body cap."""
        return cls(
            settings.base_url,
            api_key=settings.api_key,
            key_problem=settings.api_key_problem,
            key_hint=key_hint,
            timeout_s=settings.timeout_s,
            max_attempts=settings.max_attempts,
            backoff_s=settings.backoff_s,
            max_body_bytes=settings.max_body_bytes,
            transport=transport,
            observer=observer,
        )

    def _use_key(self, api_key: Secret | None, key_problem: str | None, key_hint: str) -> None:
        self._api_key = api_key
        # Tells accounts apart for per-account state (the cache, single-flight); the full digest, so two keys never
        # share an entry. Never shown anywhere: `fingerprint()` is the one for logs.
        key = api_key.get() if api_key is not None else None
        self.account = hashlib.sha256(key.encode()).hexdigest() if key is not None else ""
        self._key_problem = key_problem or MISSING_KEY
        self._key_hint = key_hint
        self._redact = Redactor(key)
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate", "User-Agent": USER_AGENT}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = httpx2.Headers(headers)

    def for_key(self, api_key: Secret, key_hint: str = KEY_HINT) -> Self:
        """This client calling with another account's key: the same origin, policy and connection pool (one origin,
        so one pool serves every account; the key is a header). Closing it closes nothing."""
        other = copy.copy(self)
        other._transport = self._pool
        other._owns_transport = False
        other._use_key(api_key, None, key_hint)
        return other

    def __repr__(self) -> str:
        key = self._api_key.fingerprint() if self._api_key is not None else "none"
        return f"DessertClient({self.base_url!r}, key={key})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_transport and self._transport is not None:
            await self._transport.aclose()

    @property
    def _pool(self) -> httpx2.AsyncBaseTransport:
        # Made on first use, so its TLS context is not paid for at start-up.
        # trust_env=False: no proxy or TLS settings from the environment.
        if self._transport is None:
            self._transport = httpx2.AsyncHTTPTransport(trust_env=False)
        return self._transport

    async def get_balance(self) -> Balance:
        return await self._get(BALANCE_PATH, Balance)

    async def get_usage(self) -> Usage:
        return await self._get(USAGE_PATH, Usage)

    async def _get(self, path: str, model: type[ModelT]) -> ModelT:
        if self._api_key is None:
            raise DessertAPIError(self._key_problem, code="not_configured")
        attempt = 0
        try:
            # One deadline for every attempt and wait: per-read timeouts never fire on a trickling body.
            with anyio.fail_after(self._timeout_s) as scope:
                while True:
                    attempt += 1
                    try:
                        return await self._attempt(path, model, attempt, scope.deadline)
                    except DessertAPIError as exc:
                        wait = self._wait_before_retry(exc, attempt, scope.deadline - self._clock())
                        if wait is None:
                            raise
                        self._observer.upstream_retry(path, exc.code)
                    await self._sleep(wait)
        except TimeoutError:
            tries = f" ({attempt} attempts)" if attempt > 1 else ""
            raise DessertAPIError(
                f"Dessert did not answer GET {path} within {self._timeout_s:g} s{tries}. Try again in a minute.",
                code="timeout",
                retryable=True,
            ) from None
        except DessertAPIError as exc:
            # Upstream text inside the message (an error body echoing the key) leaves redacted, by value.
            exc.message = self._redact(exc.message)
            exc.args = (exc.message,)
            raise

    def _wait_before_retry(self, exc: DessertAPIError, attempt: int, remaining: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up with `exc` now."""
        if not exc.retryable or attempt >= self._max_attempts:
            return None
        if exc.retry_after_s is not None:
            # The API said when; asking sooner only earns another 429. Too long for the budget: tell the agent.
            return exc.retry_after_s if exc.retry_after_s < remaining else None
        ceiling = min(self._backoff_s * 2 ** (attempt - 1), _BACKOFF_MAX_S)
        wait = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        return wait if wait < remaining else None

    async def _attempt(self, path: str, model: type[ModelT], attempt: int, deadline: float) -> ModelT:
        span = UpstreamSpan("GET", path, self._span_attributes[path], attempt)
        status: int | None = None
        error: str | None = None
        try:
            status, headers, body = await self._fetch(path)
            if status >= 300:
                raise _status_error(path, status, headers, body, self.base_url, self._key_hint)
            try:
                # A UTF-8 byte order mark is accepted on purpose: it says nothing but "UTF-8".
                # The redactor runs on decoded, cleaned text inside the models (see models.REDACT).
                return model.model_validate_json(body.removeprefix(_BOM), context={REDACT: self._redact})
            except (ValidationError, ValueError, RecursionError) as exc:
                raise _shape_error(path, status, headers, exc) from None
        except DessertAPIError as exc:
            status = exc.status if status is None else status
            error = exc.code
            raise
        except BaseException as exc:
            # The call's deadline cancels the attempt in flight; anything else is the caller going away (or a bug).
            if self._clock() >= deadline:
                error = "timeout"
            else:
                error = type(exc).__name__ if isinstance(exc, Exception) else "cancelled"
            raise
        finally:
            self._observer.upstream_request(path, str(status) if status is not None else error or "unknown")
            span.end(status, error)

    async def _fetch(self, path: str) -> tuple[int, httpx2.Headers, bytes]:
        request = httpx2.Request("GET", self._urls[path], headers=self._headers, extensions=self._extensions)
        try:
            response = await self._pool.handle_async_request(request)
            response.request = request
            try:
                decoder = _decoder(path, response)
                chunks: list[bytes] = []
                size = 0
                async for raw in response.aiter_raw():
                    # Inflate no more than the cap allows, so a compressed bomb costs a megabyte, not its size.
                    data = decoder.decompress(raw, self._max_body_bytes - size + 1) if decoder else raw
                    size += len(data)
                    if size > self._max_body_bytes or (decoder and decoder.unconsumed_tail):
                        raise DessertAPIError(
                            f"Dessert's answer to GET {path} is larger than {self._max_body_bytes // 1024} KiB; "
                            "refusing to read it. Check DESSERT_API_BASE_URL.",
                            code="bad_upstream_response",
                            status=response.status_code,
                        )
                    chunks.append(data)
                return response.status_code, response.headers, b"".join(chunks)
            finally:
                await response.aclose()  # back to the pool, or closed if the body was not read to the end
        except httpx2.ConnectTimeout:
            raise DessertAPIError(
                f"Could not connect to Dessert at {self.base_url} in time. "
                "Check the network connection and DESSERT_API_BASE_URL.",
                code="upstream_unavailable",
                retryable=True,
            ) from None
        except httpx2.TimeoutException:
            raise DessertAPIError(
                f"Dessert did not answer GET {path} in time. Try again in a minute.", code="timeout", retryable=True
            ) from None
        except zlib.error:  # the body is inflated here, by zlib: httpx2 decodes nothing
            raise DessertAPIError(
                f"Dessert's answer to GET {path} could not be decoded. Try again; if it persists, contact Dessert.",
                code="bad_upstream_response",
            ) from None
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            raise DessertAPIError(
                f"Could not reach Dessert at {self.base_url} ({type(exc).__name__}). "
                "Check the network connection and DESSERT_API_BASE_URL.",
                code="upstream_unavailable",
                retryable=True,
            ) from None


def _span_attributes(url: httpx2.URL, path: str) -> dict[str, str | int]:
    """What every span of a request to `url` says (HTTP client semantic conventions): no key, no account."""
    return {
        "http.request.method": "GET",
        "url.template": path,
        "url.full": str(url),
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
    }


def _decoder(path: str, response: httpx2.Response) -> zlib._Decompress | None:
    """A decompressor for the body's content encoding; None for identity. Anything else is refused by name."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in _ZLIB_WBITS:
        return zlib.decompressobj(_ZLIB_WBITS[encoding])
    raise DessertAPIError(
        f"Dessert answered GET {path} (HTTP {response.status_code}) in a content encoding this server does not "
        f"accept ({sanitize(encoding, 40)}). If it persists, contact Dessert.",
        code="bad_upstream_response",
        status=response.status_code,
    )


def retry_after(headers: httpx2.Headers, *, now: datetime | None = None) -> float | None:
    """The wait the API asks for, from `retry-after-ms` or `Retry-After` (seconds or HTTP date), capped at a day;
    None if absent or unreadable. Garbage is ignored rather than trusted: a bad header must not stall or crash."""
    try:
        millis = float(headers.get("retry-after-ms", "nan"))
    except ValueError:
        millis = math.nan
    if math.isfinite(millis) and millis >= 0:
        return min(round(millis / 1000, 3), RETRY_AFTER_MAX_S)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isascii() and raw.isdigit():
        return min(float(int(raw[:12])), RETRY_AFTER_MAX_S)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(round(max(seconds, 0.0), 3), RETRY_AFTER_MAX_S)


def upstream_detail(headers: httpx2.Headers, body: bytes) -> str:
    """The API's own explanation from an error body, sanitized; empty when there is none."""
    text = body[:4096].decode("utf-8", errors="replace")
    if "json" in headers.get("content-type", ""):
        try:
            data: object = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("message", "detail", "error", "error_description"):
                value = data.get(key)
                if isinstance(value, dict):
                    value = value.get("message")
                if isinstance(value, str) and value.strip():
                    return sanitize(value)
    return sanitize(text) if "html" not in headers.get("content-type", "") else ""


def _status_error(
    path: str, status: int, headers: httpx2.Headers, body: bytes, base_url: str, key_hint: str = KEY_HINT
) -> DessertAPIError:
    detail = upstream_detail(headers, body)
    said = f": {detail}" if detail else ""
    if status == 304:
        return DessertAPIError(
            f"Dessert answered GET {path} with HTTP 304 Not Modified, though this server never sends a conditional "
            "request. Check DESSERT_API_BASE_URL (a caching proxy?); if it persists, contact Dessert.",
            code="bad_upstream_response",
            status=status,
        )
    if 300 <= status < 400:
        return DessertAPIError(
            f"Dessert answered GET {path} with a redirect (HTTP {status}), which is not followed so the API key "
            f"stays on {base_url}. Check DESSERT_API_BASE_URL.",
            code="bad_upstream_response",
            status=status,
        )
    if status == 401:
        return DessertAPIError(
            f"Dessert rejected the API key (HTTP 401{said}). {key_hint}", code="auth_invalid", status=status
        )
    if status == 403:
        return DessertAPIError(
            f"Dessert refused access to {path} (HTTP 403{said}). Check that this API key's account may read "
            "balance and usage.",
            code="forbidden",
            status=status,
        )
    if status == 404:
        return DessertAPIError(
            f"Dessert has no {path} at {base_url} (HTTP 404{said}). Check DESSERT_API_BASE_URL.",
            code="not_found",
            status=status,
        )
    if status in RETRY_STATUSES:
        wait = retry_after(headers)
        code: ErrorCode = "rate_limited" if status == 429 else "upstream_unavailable"
        if status == 429:
            when = f"Wait {wait:g} s" if wait is not None else "Wait a little"
            message = f"Dessert is rate-limiting this API key (HTTP 429{said}). {when} and try again."
        else:
            when = f"Try again in {wait:g} s" if wait is not None else "Try again in a minute"
            message = f"Dessert is unavailable right now (HTTP {status}{said}). {when}."
        return DessertAPIError(message, code=code, status=status, retryable=True, retry_after_s=wait)
    return DessertAPIError(
        f"Dessert answered GET {path} with HTTP {status}{said}, which this server does not expect. "
        "Check DESSERT_API_BASE_URL; if it persists, contact Dessert.",
        code="bad_upstream_response",
        status=status,
    )


def _shape_error(
    path: str, status: int, headers: httpx2.Headers, exc: ValidationError | ValueError | RecursionError
) -> DessertAPIError:
    errors = exc.errors(include_input=False, include_url=False) if isinstance(exc, ValidationError) else []
    if isinstance(exc, RecursionError):
        what = "JSON nested too deeply"
    elif not errors or errors[0]["type"] == "json_invalid":
        kind = sanitize(headers.get("content-type", "") or "no content type", 60)
        what = f"something that is not JSON ({kind})"
    else:
        where = sanitize(".".join(str(p) for p in errors[0]["loc"]), 60)
        what = f"JSON that does not match the documented shape ({where}: {sanitize(errors[0]['msg'], 80)})"
    return DessertAPIError(
        f"Dessert answered GET {path} (HTTP {status}) with {what}. If it persists, contact Dessert.",
        code="bad_upstream_response",
        status=status,
    )
